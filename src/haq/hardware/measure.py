"""``haq hardware measure``: a cost table timed on a real kernel, one layer at a time.

A runner times one evaluation of one layer at one bit pair: ``runner(layer, w_bits, a_bits,
batch) -> seconds``. Built in: ``bitserial`` (:mod:`haq.hardware.bitserial`, numpy on this
CPU) and ``tvm-bitserial`` (:mod:`haq.hardware.tvm_bitserial`, compiled by Apache TVM); any ``package.module:function`` or ``path/file.py:function`` with that signature plugs
in a user's own (an FPGA, an NPU, a runtime). Each (layer shape, w, a) is run ``warmup`` times,
then timed ``repeats`` times: the table holds the median, and the spread (max - min) as a
detail. Layers of the same shape are timed once. Bit widths not in ``bits`` are interpolated
linearly between the measured ones (clamped at the ends); the table says which were measured.

Progress is saved after every layer in ``OUT.partial.npz``: a killed measurement resumes
without timing the finished layers again, when the same layers, bits, runner and batch are
asked for.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from haq.errors import HaqError
from haq.hardware.table import CostTable, check_costs, measured_hardware, table_output
from haq.layers import LayerSpec
from haq.plugins import load_callable

Runner = Callable[[LayerSpec, int, int, int], float]
BUILTIN_RUNNERS = ("bitserial", "tvm-bitserial")


def load_runner(spec: str) -> Runner:
    """A runner by name (``bitserial``, ``tvm-bitserial``) or ``module:function`` /
    ``file.py:function``."""
    if spec == "bitserial":
        from haq.hardware.bitserial import time_layer

        return time_layer
    if spec == "tvm-bitserial":
        from haq.hardware import tvm_bitserial

        tvm_bitserial.require_tvm()  # refused before any layer when TVM is missing
        return tvm_bitserial.time_layer
    return load_callable(spec, "runner")


def _shape_key(layer: LayerSpec) -> str:
    d = layer.to_dict()
    return json.dumps({k: d[k] for k in d if k not in ("index", "name")}, sort_keys=True)


def _time(runner: Runner, layer: LayerSpec, w: int, a: int, batch: int, warmup: int, repeats: int) -> tuple[float, float]:  # fmt: skip
    """Median and spread (max - min) of ``repeats`` timings after ``warmup`` runs."""
    for _ in range(warmup):
        runner(layer, w, a, batch)
    times = []
    for _ in range(repeats):
        t = float(runner(layer, w, a, batch))
        if not np.isfinite(t) or t <= 0:
            raise HaqError(f"the runner returned {t!r} seconds for {layer.name} at w{w}a{a}")
        times.append(t)
    return float(np.median(times)), float(max(times) - min(times))


def _fill(grid: np.ndarray, bits: list[int]) -> np.ndarray:
    """An 8 x 8 table from values measured at ``bits`` x ``bits`` (linear in each axis,
    clamped at the ends)."""
    axis = np.arange(1, 9)
    rows = np.array([np.interp(axis, bits, grid[i]) for i in range(len(bits))])  # (b, 8) in a
    return np.array([np.interp(axis, bits, rows[:, j]) for j in range(8)]).T  # (8 w, 8 a)


def measure_table(
    layers: Sequence[LayerSpec],
    runner_spec: str,
    out: str | Path,
    bits: Sequence[int] = tuple(range(1, 9)),
    batch: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    progress: Callable[[int, int, float], None] | None = None,
    model: str = "",
) -> CostTable:
    """Time every layer at ``bits`` x ``bits`` with the runner and write the table to ``out``
    (``.npz``); ``progress(done, total, seconds_so_far)`` after each layer. ``model`` (how the
    layers' model was named) is kept in the table, to name it when the table is refused."""
    out = table_output(out, ".npz")
    bits = sorted(set(bits))
    if not bits or not all(1 <= b <= 8 for b in bits):
        raise HaqError(f"--bits must be widths from 1 to 8 (got {bits})")
    runner = load_runner(runner_spec)
    setup = {"runner": runner_spec, "bits": bits, "batch": batch, "layers": [_shape_key(s) for s in layers]}  # fmt: skip
    partial = out.with_name(out.name + ".partial.npz")
    done = _resume(partial, setup)
    _save_partial(partial, setup, done, keep=False)  # unwritable: refused before any timing
    t0 = time.perf_counter()
    for i, layer in enumerate(layers):
        key = _shape_key(layer)
        if key not in done:
            grid = np.array([[_time(runner, layer, w, a, batch, warmup, repeats) for a in bits] for w in bits])  # fmt: skip
            done[key] = grid  # (w, a, [median, spread])
            _save_partial(partial, setup, done)
        if progress:
            progress(i + 1, len(layers), time.perf_counter() - t0)
    table = _table(layers, [done[_shape_key(s)] for s in layers], bits, runner_spec, batch, out)
    table.meta.update(repeats=repeats, warmup=warmup, **({"model": model} if model else {}))
    table.save(out)
    partial.unlink(missing_ok=True)
    return table


def _resume(partial: Path, setup: dict[str, Any]) -> dict[str, np.ndarray]:
    if not partial.is_file():
        return {}
    try:
        data = np.load(partial, allow_pickle=False)
        if json.loads(str(data["setup"])) != setup:
            return {}
        keys = json.loads(str(data["keys"]))
        return {k: data[f"g{i}"] for i, k in enumerate(keys)}
    except (OSError, KeyError, ValueError):
        return {}  # unreadable: measure again


def _save_partial(
    partial: Path, setup: dict[str, Any], done: dict[str, np.ndarray], keep: bool = True
) -> None:
    """Write the layers timed so far (``keep=False``: only try, and remove the attempt)."""
    keys = list(done)
    tmp = partial.with_name(f".{partial.name}.{os.getpid()}.tmp.npz")
    arrays = {f"g{i}": done[k] for i, k in enumerate(keys)}
    try:
        np.savez(tmp, setup=np.array(json.dumps(setup)), keys=np.array(json.dumps(keys)), **arrays)  # type: ignore[arg-type]
        if keep:
            tmp.replace(partial)
        else:
            tmp.unlink()
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise HaqError(
            f"cannot write {str(partial)!r} (the measurement so far): {err.strerror}"
        ) from err


def _table(layers: Sequence[LayerSpec], grids: list[np.ndarray], bits: list[int], runner: str, batch: int, out: Path) -> CostTable:  # fmt: skip
    median = np.stack([_fill(g[..., 0], bits) for g in grids])
    spread = np.stack([_fill(g[..., 1], bits) for g in grids])
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)"
    hw = measured_hardware(
        {"name": out.stem, "arch": "measured", "batch": batch,
         "description": f"measured with {runner} on {machine}"}, str(out),
    )  # fmt: skip
    with np.errstate(over="ignore"):
        ns = median * 1e9  # no clock: cycles of a nominal 1 GHz
    check_costs(f"{runner} runner", {"cycles": ns, "latency_s": median}, "its times must be positive finite seconds")  # fmt: skip
    meta = {
        "runner": runner,
        "machine": machine,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "bits_measured": bits,
        "interpolated": bits != list(range(1, 9)),
    }
    return CostTable(
        layers=list(layers), hardware=hw, cycles=ns, compute_cycles=ns,
        memory_cycles=np.zeros_like(ns), latency_s=median, energy_j=None,
        dram_bytes=np.zeros_like(ns), meta=meta, detail={"spread_s": spread},
    )  # fmt: skip
