"""Cost tables: every layer's cost at all 8 x 8 (weight bits, activation bits) pairs.

The search never calls a simulator: it indexes these tables. ``cost[layer, w-1, a-1]`` is
the convention (the same as the HAQ reference code's ``.npy`` lookup tables).

Units: ``latency_s`` and ``energy_j`` are for one batch of ``batch`` images on the hardware;
``size`` is in bytes of quantized weights (biases are kept in fp32 and reported apart);
``bops`` (MACs x w x a) is per image.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from haq import __version__
from haq.errors import HaqError
from haq.hardware import ARCHS, HardwareConfig, load_hardware, parse_hardware
from haq.layers import LayerSpec

METRICS = ("latency", "energy", "size", "bops")
DETAIL_UNITS = {
    "cycles": "cycles per batch", "bits": "bits per batch", "j": "J per batch", "s": "s per batch"
}  # fmt: skip


@dataclass
class PolicyCost:
    """Per-layer and total costs of one policy. Per-layer arrays have shape (L,)."""

    w_bits: np.ndarray
    a_bits: np.ndarray
    cycles: np.ndarray
    latency_s: np.ndarray
    energy_j: np.ndarray | None
    size_bytes: np.ndarray
    bops: np.ndarray
    memory_bound: np.ndarray

    def total(self, metric: str) -> float:
        """Sum over layers of ``metric`` (``latency`` s, ``energy`` J, ``size`` B, ``bops``)."""
        if metric == "latency":
            return float(self.latency_s.sum())
        if metric == "energy":
            if self.energy_j is None:
                raise HaqError("this hardware has no energy model")
            return float(self.energy_j.sum())
        if metric == "size":
            return float(self.size_bytes.sum())
        if metric == "bops":
            return float(self.bops.sum())
        raise HaqError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")


@dataclass
class CostTable:
    """Costs of one model on one hardware at every bit pair, with provenance."""

    layers: list[LayerSpec]
    hardware: HardwareConfig
    cycles: np.ndarray
    compute_cycles: np.ndarray
    memory_cycles: np.ndarray
    latency_s: np.ndarray
    energy_j: np.ndarray | None
    dram_bytes: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, np.ndarray] = field(default_factory=dict)  # model-specific [L, 8, 8]

    @property
    def layer_names(self) -> list[str]:
        return [s.name for s in self.layers]

    @property
    def n_weights(self) -> np.ndarray:
        return np.array([s.n_weights for s in self.layers], dtype=np.float64)

    @property
    def n_bias(self) -> np.ndarray:
        return np.array([s.n_bias for s in self.layers], dtype=np.float64)

    @property
    def macs(self) -> np.ndarray:
        """MACs per image."""
        return np.array([s.macs for s in self.layers], dtype=np.float64)

    @property
    def memory_bound(self) -> np.ndarray:
        """[L, 8, 8] True where DRAM time exceeds compute time."""
        return self.memory_cycles > self.compute_cycles

    @property
    def has_energy(self) -> bool:
        return self.energy_j is not None

    def metric_available(self, metric: str) -> bool:
        return metric in ("latency", "size", "bops") or (metric == "energy" and self.has_energy)

    def policy_cost(
        self, w_bits: Sequence[int] | np.ndarray, a_bits: Sequence[int] | np.ndarray
    ) -> PolicyCost:
        """Cost of a policy given per-layer weight and activation bits (1..8)."""
        w = np.asarray(w_bits, dtype=np.int64)
        a = np.asarray(a_bits, dtype=np.int64)
        n = len(self.layers)
        if w.shape != (n,) or a.shape != (n,):
            raise HaqError(f"a policy for this model needs {n} layers (got {w.shape[0]})")
        if w.min() < 1 or w.max() > 8 or a.min() < 1 or a.max() > 8:
            raise HaqError("bit widths must be within 1..8")
        idx = (np.arange(n), w - 1, a - 1)
        return PolicyCost(
            w_bits=w,
            a_bits=a,
            cycles=self.cycles[idx],
            latency_s=self.latency_s[idx],
            energy_j=None if self.energy_j is None else self.energy_j[idx],
            size_bytes=self.n_weights * w / 8.0,
            bops=self.macs * w * a,
            memory_bound=self.memory_bound[idx],
        )

    def metric_table(self, metric: str) -> np.ndarray:
        """[L, 8, 8] cost of ``metric`` for every layer at every (w, a) pair, in the units of
        :meth:`PolicyCost.total` (what the ILP and greedy strategies plan on)."""
        bits = np.arange(1, 9, dtype=np.float64)
        shape = (len(self.layers), 8, 8)
        if metric == "latency":
            return self.latency_s
        if metric == "energy":
            if self.energy_j is None:
                raise HaqError("this hardware has no energy model")
            return self.energy_j
        if metric == "size":
            return np.broadcast_to((self.n_weights / 8.0)[:, None, None] * bits[:, None], shape)
        if metric == "bops":
            return self.macs[:, None, None] * bits[:, None] * bits[None, :]
        raise HaqError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")

    def uniform_cost(self, bits: int) -> PolicyCost:
        n = len(self.layers)
        return self.policy_cost(np.full(n, bits), np.full(n, bits))

    def fp32_size_bytes(self) -> float:
        """Weights at 32 bits: the reference of size ratios (as in the paper)."""
        return float(self.n_weights.sum() * 4.0)

    # --- persistence -------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` with arrays [L, 8, 8] and a JSON ``meta`` with units and provenance."""
        out = table_output(path, ".npz")
        meta = {
            **self.meta,
            "units": {
                "cycles": "cycles",
                "latency_s": "s per batch",
                "energy_j": "J per batch",
                "dram_bytes": "bytes per batch",
                **{k: DETAIL_UNITS[k.rsplit("_", 1)[-1]] for k in self.detail},
            },
            "index": "[layer, w_bits-1, a_bits-1]",
            "hardware": self.hardware.to_dict(),
            "layers": [s.to_dict() for s in self.layers],
            "haq_version": __version__,
        }
        arrays = {
            "cycles": self.cycles,
            "compute_cycles": self.compute_cycles,
            "memory_cycles": self.memory_cycles,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j
            if self.energy_j is not None
            else np.full_like(self.cycles, np.nan),
            "dram_bytes": self.dram_bytes,
            "layer_names": np.array(self.layer_names),
            "meta": np.array(json.dumps(meta)),
            **{f"detail_{k}": v for k, v in self.detail.items()},
        }
        tmp = out.with_name(out.name + ".tmp")
        try:
            with tmp.open("wb") as fh:
                np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
            tmp.replace(out)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise HaqError(f"cannot write cost table {str(out)!r}: {err.strerror}") from err
        return out

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        """A table written by :meth:`save` (``haq cost --table``, ``haq hardware measure``)."""
        p = Path(path)
        if not p.is_file():
            raise HaqError(f"cost table {str(p)!r} not found")
        if not zipfile.is_zipfile(p):  # numpy would speak of pickled data
            raise HaqError(f"{path}: not a haq cost table (not an .npz archive)")
        try:
            data = np.load(p, allow_pickle=False)
            meta = json.loads(str(data["meta"]))
            hw_dict = dict(meta.pop("hardware"))
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise HaqError(f"{path}: not a haq cost table ({err})") from err
        hw_dict.pop("source", None)
        if hw_dict.get("arch") in ARCHS:  # computed by a cost model: its fields are checked
            hw = parse_hardware(hw_dict, f"{path} (hardware)")
        else:  # measured: no model behind it
            hw = measured_hardware(hw_dict, str(path), not np.isnan(data["energy_j"]).all())
        layers = [_layer_from_dict(d) for d in meta.pop("layers")]
        energy = data["energy_j"]
        energy = None if np.isnan(energy).all() else energy
        costs = {name: energy if name == "energy_j" else data[name] for name in COST_ARRAYS}
        check_costs(str(path), costs, "every entry must be a positive finite number")
        return cls(
            layers=layers,
            hardware=hw,
            cycles=data["cycles"],
            compute_cycles=data["compute_cycles"],
            memory_cycles=data["memory_cycles"],
            latency_s=data["latency_s"],
            energy_j=energy,
            dram_bytes=data["dram_bytes"],
            meta=meta,
            detail={
                k.removeprefix("detail_"): data[k] for k in data.files if k.startswith("detail_")
            },
        )

    def save_haq_npy(self, path: str | Path) -> Path:
        """The HAQ reference code's lookup format: int64 [layers, 8, 8], here in cycles.

        The reference code only uses ratios of table entries, so any unit works; we write
        cycles of this hardware (divide by its clock for seconds).
        """
        out = table_output(path, ".npy")
        try:
            np.save(out, np.rint(self.cycles).astype(np.int64))
        except OSError as err:
            raise HaqError(f"cannot write {str(out)!r}: {err}") from err
        return out

    def with_haq_npy(self, path: str | Path) -> CostTable:
        """This table with latency taken from a HAQ-format ``.npy`` (entries read as cycles
        of this hardware's clock). Layer count must match."""
        try:
            arr = np.load(path, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as err:
            raise HaqError(f"{path}: cannot read HAQ lookup table ({err})") from err
        n = len(self.layers)
        if arr.shape != (n, 8, 8):
            raise HaqError(
                f"{path}: HAQ lookup table has shape {arr.shape}; this model needs ({n}, 8, 8)"
            )
        clock_hz = self.hardware.params.get("clock_mhz", 1.0) * 1e6
        with np.errstate(over="ignore", under="ignore"):
            latency = arr / clock_hz
        check_costs(str(path), {"cycles": arr, "latency_s": latency}, "every entry must be a positive finite number of cycles")  # fmt: skip
        return CostTable(
            layers=self.layers,
            hardware=self.hardware,
            cycles=arr,
            compute_cycles=arr,
            memory_cycles=np.zeros_like(arr),
            latency_s=latency,
            energy_j=self.energy_j,
            dram_bytes=self.dram_bytes,
            meta={**self.meta, "latency_from": str(path)},
        )


def measured_hardware(d: dict[str, Any], source: str, has_energy: bool = False) -> HardwareConfig:
    """The hardware of a table that no cost model computed (measured, or a HAQ ``.npy``)."""
    batch = d.get("batch", 1)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise HaqError(f"{source}: batch must be an integer >= 1 (got {batch!r})")
    return HardwareConfig(
        name=str(d.get("name", Path(source).stem)),
        arch=str(d.get("arch", "measured")),
        description=str(d.get("description", "")),
        batch=batch,
        source=source,
        has_energy=has_energy,
    )


def table_output(path: str | Path, suffix: str) -> Path:
    """``path`` checked before a table is computed or written: ``--hardware`` tells a table
    by its suffix (``.npz`` haq's, ``.npy`` the HAQ reference's), so another one is refused,
    as is a directory; missing parent directories are made."""
    out = Path(path)
    if out.suffix.lower() != suffix:
        raise HaqError(
            f"{str(out)!r}: name the table *{suffix} (--hardware recognises tables by it)"
        )
    if out.is_dir():
        raise HaqError(f"cannot write {str(out)!r}: it is a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HaqError(f"cannot write {str(out)!r}: {err.strerror}") from err
    return out


def table_for(
    layers: Sequence[LayerSpec],
    hardware: str,
    batch: int | None = None,
    meta: dict[str, Any] | None = None,
) -> CostTable:
    """The cost table of ``layers`` on ``hardware``: computed by a cost model (a preset name
    or a TOML file), or read from a table file: ``.npz`` (haq's, written by ``haq cost
    --table`` or ``haq hardware measure``) or ``.npy`` (the HAQ reference code's lookup:
    [layers, 8, 8] latency in cycles, indexed [layer, w-1, a-1], layers in model order)."""
    suffix = Path(hardware).suffix.lower()
    if suffix == ".npz":
        return _fits_model(CostTable.load(hardware), layers, batch, hardware)
    if suffix == ".npy":
        return haq_npy_table(layers, hardware, batch)
    return cost_table(layers, load_hardware(hardware, batch), meta)


def _fits_model(
    table: CostTable, layers: Sequence[LayerSpec], batch: int | None, path: str
) -> CostTable:
    """A loaded table must be of this model's layers, at the batch asked for."""
    if batch is not None and batch != table.hardware.batch:
        raise HaqError(
            f"{path} was made at batch {table.hardware.batch}; a table cannot change its batch "
            f"(--batch {batch})"
        )
    mine = [(s.name, s.n_weights, s.macs) for s in layers]
    theirs = [(s.name, s.n_weights, s.macs) for s in table.layers]
    if mine != theirs:
        i = next((k for k, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
        where = (
            f"{len(theirs)} layers, the model has {len(mine)}"
            if i is None
            else f"its layer {i} is {theirs[i][0]!r} ({theirs[i][1]} weights), the model's {mine[i][0]!r} ({mine[i][1]} weights)"
        )
        made_for = (
            f" (measured for --model {table.meta['model']})" if table.meta.get("model") else ""
        )
        raise HaqError(f"{path} is a table of another model: {where}{made_for}")
    return table


def haq_npy_table(layers: Sequence[LayerSpec], path: str, batch: int | None = None) -> CostTable:
    """A table from the HAQ reference code's ``.npy`` lookup ([layers, 8, 8] latency in cycles,
    no clock): latency only, shown as if at 1 GHz (1 cycle = 1 ns), so ratio budgets (``0.5x``)
    are exact and time budgets are refused (:func:`haq.search.budget.parse_budget`)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise HaqError(f"{path}: cannot read a HAQ lookup table ({err})") from err
    n = len(layers)
    if arr.shape != (n, 8, 8) or not np.issubdtype(arr.dtype, np.number):
        raise HaqError(f"{path}: a HAQ lookup table of shape {arr.shape}; this model needs ({n}, 8, 8) numbers")  # fmt: skip
    cycles = arr.astype(np.float64)
    latency = cycles * 1e-9  # shown as if at 1 GHz
    check_costs(str(path), {"cycles": cycles, "latency_s": latency}, "every entry must be a positive finite number of cycles")  # fmt: skip
    hw = measured_hardware(
        {"name": Path(path).stem, "arch": "haq-npy", "batch": batch or 1,
         "description": f"HAQ lookup table {path} (cycles, no clock)"}, str(path),
    )  # fmt: skip
    return CostTable(
        layers=list(layers), hardware=hw, cycles=cycles, compute_cycles=cycles,
        memory_cycles=np.zeros_like(cycles), latency_s=latency, energy_j=None,
        dram_bytes=np.zeros_like(cycles), meta={"latency_from": str(path), "relative_latency": True},
    )  # fmt: skip


COST_ARRAYS = ("cycles", "latency_s", "energy_j", "dram_bytes")


def check_costs(source: str, arrays: dict[str, np.ndarray | None], hint: str) -> None:
    """Refuse, in one line ending in ``hint``, costs no policy can be measured by: a NaN or
    negative entry, one that is infinite or whose model total can be (the sum of the layers'
    largest entries: every layer finite, a policy's total not), a latency or energy of 0."""
    for name, values in arrays.items():
        if values is None:
            continue
        if np.isnan(values).any() or (values < 0).any():
            raise HaqError(f"{source}: {name} has NaN or negative entries; {hint}")
        with np.errstate(over="ignore"):
            worst = values.reshape(len(values), -1).max(axis=1).sum()
        if not (np.isfinite(values).all() and np.isfinite(worst)):
            raise HaqError(
                f"{source}: the costs overflow ({name} is not finite for a layer or a model's "
                f"total); {hint}"
            )
        if name in ("latency_s", "energy_j") and (values == 0).any():  # e.g. a clock of 1e308 MHz
            raise HaqError(f"{source}: {name} is 0 for a layer; {hint}")


def _layer_from_dict(d: dict[str, Any]) -> LayerSpec:
    args = dict(d)
    for key in ("kernel", "stride", "padding", "in_hw", "out_hw"):
        args[key] = tuple(args[key])
    return LayerSpec(**args)


def cost_table(
    layers: Sequence[LayerSpec],
    hardware: HardwareConfig,
    meta: dict[str, Any] | None = None,
) -> CostTable:
    """Compute the full table of ``layers`` on ``hardware`` in one vectorised pass."""

    if not layers:
        raise HaqError("no layers to cost")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        c = ARCHS[hardware.arch].costs(layers, hardware)
    check_costs(
        hardware.source or hardware.name,
        {name: getattr(c, name) for name in COST_ARRAYS},
        "check the hardware fields for out-of-range values",
    )
    info = {"batch": hardware.batch, **(meta or {})}
    return CostTable(
        layers=list(layers),
        hardware=hardware,
        cycles=c.cycles,
        compute_cycles=c.compute_cycles,
        memory_cycles=c.memory_cycles,
        latency_s=c.latency_s,
        energy_j=c.energy_j,
        dram_bytes=c.dram_bytes,
        meta=info,
        detail=c.detail,
    )
