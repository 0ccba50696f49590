"""Costs of a policy for a model on a hardware: the library behind ``haq cost``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from haq.hardware import HardwareConfig, list_hardware
from haq.hardware.table import CostTable, cost_table, table_for
from haq.layers import extract_layers
from haq.policy import Policy, policy_arg, same_model

COST_MODEL, COST_HARDWARE = "mobilenet_v2", "bismo-edge"  # haq cost without a policy file


@dataclass
class CostTarget:
    """The model (architecture, its keyword arguments, input shape) and hardware to cost a
    policy on, and a note saying where they came from when the user did not name them."""

    model: str
    hardware: str
    input_shape: tuple[int, int, int] | None = None
    batch: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


def cost_target(
    policy: str,
    model: str | None = None,
    hardware: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    batch: int | None = None,
) -> CostTarget:
    """What ``haq cost`` costs: the model and hardware given; else those a search's policy
    file was searched for (it records them); else MobileNet-V2 on BISMO edge. A policy of one
    model costed on another (same layer names) gives plausible numbers of the wrong model."""
    read = policy_arg(policy)
    info = read.info if isinstance(read, Policy) else {}
    mine = info.get("model")
    target = CostTarget(model or mine or COST_MODEL, hardware or COST_HARDWARE, input_shape, batch)
    if model is None and mine:
        target.model_kwargs = dict(info.get("model_kwargs") or {})
        if input_shape is None and info.get("input_shape"):
            target.input_shape = tuple(int(d) for d in info["input_shape"])  # type: ignore[assignment]
    searched_on = _hardware_of(info)
    if hardware is None and searched_on:
        target.hardware = searched_on
        target.batch = batch or info.get("batch")
    name, notes = Path(policy).name, []
    taken = [what for what, given, found in (("model", model, mine), ("hardware", hardware, searched_on)) if given is None and found]  # fmt: skip
    if taken:
        notes.append(f"{' and '.join(taken)} as {name} was searched for ({target.model} on {target.hardware}; --model and --hardware choose others)")  # fmt: skip
    if model and mine and not same_model(model, mine):
        notes.append(f"{name} was searched for {mine}, costed on {model} as asked")
    lost = info.get("hardware_spec")
    if hardware is None and isinstance(lost, str) and searched_on is None:
        notes.append(f"{name} was searched on {lost}, not found here: costed on {target.hardware}")
    target.note = f"note: {'; '.join(notes)}" if notes else None
    return target


def _hardware_of(info: dict[str, Any]) -> str | None:
    """The hardware a policy was searched on, if it can be found here: the ``--hardware`` of
    its search (a preset, or a file that still exists); for files written before searches
    recorded it, the preset its hardware is named after."""
    spec = info.get("hardware_spec")
    if isinstance(spec, str):
        return spec if spec in list_hardware() or Path(spec).is_file() else None
    name = info.get("hardware")
    return name if isinstance(name, str) and name in list_hardware() else None


def model_cost_table(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    hardware: str | HardwareConfig,
    batch: int | None = None,
    model_name: str = "",
) -> CostTable:
    """Extract the layers of ``model`` and compute its full [L, 8, 8] cost table."""
    layers = extract_layers(model, input_shape)
    meta = {"model": model_name or type(model).__name__, "input_shape": list(input_shape)}
    if isinstance(hardware, HardwareConfig):
        return cost_table(layers, hardware.with_batch(batch), meta)
    return table_for(layers, hardware, batch, meta)


def policy_report(table: CostTable, policy: Policy) -> dict[str, Any]:
    """Per-layer rows and totals of ``policy`` (the JSON of ``haq cost --format json``).

    Latency is per batch of ``batch`` images in ms, energy per batch in mJ (None without an
    energy model), size in bytes of quantized weights, BOPs per image. Ratios compare with
    the same model at w8a8 on the same hardware, except ``size_vs_fp32`` (weights at 32 bits).
    """
    policy.check_layers(table.layer_names)
    w, a = policy.arrays()
    cost = table.policy_cost(w, a)
    ref = table.uniform_cost(8)
    rows = []
    for i, spec in enumerate(table.layers):
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "w_bits": int(w[i]),
                "a_bits": int(a[i]),
                "macs": int(spec.macs),
                "params": int(spec.n_weights),
                "cycles": float(cost.cycles[i]),
                "latency_ms": float(cost.latency_s[i] * 1e3),
                "energy_mj": None if cost.energy_j is None else float(cost.energy_j[i] * 1e3),
                "size_bytes": float(cost.size_bytes[i]),
                "bops": float(cost.bops[i]),
                "bound": "memory" if cost.memory_bound[i] else "compute",
            }
        )
    energy = None if cost.energy_j is None else cost.total("energy")
    total = {
        "cycles": float(cost.cycles.sum()),
        "latency_ms": cost.total("latency") * 1e3,
        "energy_mj": None if energy is None else energy * 1e3,
        "size_bytes": cost.total("size"),
        "bias_bytes_fp32": float(table.n_bias.sum() * 4),
        "bops": cost.total("bops"),
        "macs": float(table.macs.sum()),
        "latency_vs_w8a8": cost.total("latency") / ref.total("latency"),
        "energy_vs_w8a8": None if energy is None else energy / ref.total("energy"),
        "size_vs_w8a8": cost.total("size") / ref.total("size"),
        "size_vs_fp32": cost.total("size") / table.fp32_size_bytes(),
        "bops_vs_w8a8": cost.total("bops") / ref.total("bops"),
        "memory_bound_layers": int(cost.memory_bound.sum()),
    }
    return {
        "model": table.meta.get("model"),
        "input_shape": table.meta.get("input_shape"),
        "hardware": table.hardware.name,
        "batch": table.hardware.batch,
        "policy": policy.describe(),
        "units": {
            "latency_ms": "ms per batch",
            "energy_mj": "mJ per batch",
            "size_bytes": "bytes of weights",
            "bops": "bit-ops per image",
        },
        "layers": rows,
        "total": total,
    }


def format_cost_report(report: dict[str, Any]) -> str:
    """The per-layer table and totals of :func:`policy_report` as text (what `haq cost` prints)."""
    from haq.textfmt import fmt_num, table

    has_energy = report["total"]["energy_mj"] is not None
    headers = ["layer", "kind", "w", "a", "MACs", "params", "latency_ms"]
    headers += ["energy_mj"] if has_energy else []
    headers += ["size_B", "BOPs", "bound"]
    rows = []
    for r in report["layers"]:
        row = [
            r["name"],
            r["kind"],
            r["w_bits"],
            r["a_bits"],
            r["macs"],
            r["params"],
            f"{r['latency_ms']:.4f}",
        ]
        row += [f"{r['energy_mj']:.4f}"] if has_energy else []
        row += [r["size_bytes"], f"{r['bops']:.3g}", r["bound"]]
        rows.append(row)
    t = report["total"]
    lines = [
        f"model {report['model']}  input {report['input_shape']}  hardware {report['hardware']} "
        f"(batch {report['batch']})  policy {report['policy']}",
        "latency and energy are per batch; size counts quantized weights; BOPs per image",
        "",
        table(headers, rows, "ll" + "r" * (len(headers) - 3) + "l"),
        "",
        f"total latency  {t['latency_ms']:.4f} ms   ({t['latency_vs_w8a8']:.3f}x of w8a8)",
    ]
    if has_energy:
        lines.append(
            f"total energy   {t['energy_mj']:.4f} mJ   ({t['energy_vs_w8a8']:.3f}x of w8a8)"
        )
    else:
        lines.append("total energy   - (no energy model for this hardware)")
    lines += [
        f"weight size    {fmt_num(t['size_bytes'])} B   ({t['size_vs_fp32']:.3f}x of fp32, "
        f"{t['size_vs_w8a8']:.3f}x of w8a8; fp32 biases {fmt_num(t['bias_bytes_fp32'])} B apart)",
        f"BOPs           {t['bops']:.4g} per image   ({t['bops_vs_w8a8']:.3f}x of w8a8)",
        f"memory-bound   {t['memory_bound_layers']} of {len(report['layers'])} layers",
    ]
    return "\n".join(lines)
