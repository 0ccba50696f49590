"""BitFusion as its public simulator accounts for it (github.com/hsharma35/bitfusion, the 16x32
45 nm configuration ``bf_e_conf.ini``): preset ``bitfusion-45nm``.

Written from reading the simulator's optimizer and statistics (no code carried over); the
preset ``bitfusion`` is this project's variant with outputs requantized on chip
(docs/hardware-models.md). Per layer and (w, a) bit pair, as the simulator does:

- **Tiles.** Powers of two: batch ``b``, output side ``o`` (``ow = oh``), input channels
  ``ic``, output channels ``oc`` (multiples of the M columns; any power of two for the first
  layer, which runs as im2col). A tile must fit in half of each buffer (double buffering):
  weights ``ceil(K*K*ic / (N*pf)) * N*pf * oc * w`` bits, inputs ``iw*ih*ic*b*a`` (im2col:
  ``ow*oh*K*K*ic*b*a``), outputs and partial sums ``ow*oh*ceil(oc/M)*M*b*32``.
- **Loop orders.** Every order of the tile loops {B, OW, OH, IC, OC}. Walking from the
  innermost loop out, a buffer keeps its data across a loop its data does not depend on, and
  across a loop it does depend on while the grown block still fits half the buffer; past
  that point every outer loop re-reads it from DRAM. Outputs go back to DRAM as often as they
  are read (partial sums at 32 bits).
- **Inner loop.** Input-, output- or weight-stationary, whichever moves the fewest SRAM bits
  by the simulator's estimate; it sets the SRAM read counts.
- **Cycles** = compute + max(0, DRAM cycles - compute) + initial load + final store, DRAM
  cycles = bits / interface width; compute per tile ``b*ceil(oc/M)*ow*oh*K*K*ceil(ic/(N*pf))``
  (im2col: ``b*oh*ow*ceil(oc/M)*ceil(K*K*ic/(N*pf))``), ``pf = int(8/max(a,2)) *
  int(8/max(w,2))``.
- **Choice**: the tile and order with the fewest cycles, then the least energy.
- **Energy** = core energy per compute cycle + SRAM bits x pJ/bit + DRAM bits x pJ/bit.

Grouped and depthwise layers (the simulator has none) run as ``groups`` independent
convolutions. Per-layer detail arrays (``detail`` of :class:`ArchCosts`): stall cycles, DRAM
bits, SRAM bits per buffer, energy split core / SRAM / DRAM.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from haq.hardware import bitfusion
from haq.hardware.config import FieldSpec, HardwareConfig
from haq.hardware.shapes import ArchCosts
from haq.layers import LayerSpec

HAS_ENERGY = True
FIELDS: dict[str, FieldSpec] = {
    k: v for k, v in bitfusion.FIELDS.items() if k not in ("psum_bits", "output_bits")
}
OUT_BITS = 32  # the simulator moves outputs and partial sums at 32 bits
LOOPS = ("B", "OW", "OH", "IC", "OC")
DEPENDS = {  # which buffers a tile loop indexes: weights, inputs, outputs
    "B": (False, True, True),
    "OW": (False, True, True),
    "OH": (False, True, True),
    "IC": (True, True, False),
    "OC": (True, False, True),
}
peak_macs_per_s = bitfusion.peak_macs_per_s
bandwidth_bytes_per_s = bitfusion.bandwidth_bytes_per_s
DETAIL = (
    "stall_cycles",
    "dram_bits",
    "wbuf_bits",
    "ibuf_bits",
    "obuf_bits",
    "core_energy_j",
    "sram_energy_j",
    "dram_energy_j",
)


@dataclass(frozen=True)
class Conv:
    """One convolution as the simulator sees it (one group of a grouped layer)."""

    kh: int
    kw: int
    oh: int
    ow: int
    sh: int
    sw: int
    ic: int
    oc: int
    batch: int
    im2col: bool


def as_conv(spec: LayerSpec, batch: int) -> Conv:
    return Conv(
        kh=spec.kernel[0],
        kw=spec.kernel[1],
        oh=spec.out_hw[0],
        ow=spec.out_hw[1],
        sh=spec.stride[0],
        sw=spec.stride[1],
        ic=spec.in_channels // spec.groups,
        oc=spec.out_channels // spec.groups,
        batch=batch,
        im2col=spec.index == 0 and spec.kind != "linear",
    )


def _pow2(limit: int, step: int = 1) -> np.ndarray:
    """min(2^i * step, limit) for i = 0 .. ceil(log2(ceil(limit / step)))."""
    count = math.ceil(math.log2(max(1, math.ceil(limit / step)))) + 1
    return np.minimum(step * 2 ** np.arange(count), limit)


def tiles(c: Conv, cols: int) -> dict[str, np.ndarray]:
    """Every tile the simulator tries, as flat float64 arrays of the tile sizes."""
    side = np.arange(math.ceil(math.log2(max(c.oh, c.ow, 1))) + 1)
    oc = _pow2(c.oc) if c.im2col else _pow2(c.oc, cols)
    grid = np.meshgrid(_pow2(c.batch), side, _pow2(c.ic), oc, indexing="ij")
    b, s, ic, oc = (g.ravel().astype(np.float64) for g in grid)
    return {"b": b, "ow": np.minimum(2**s, c.ow), "oh": np.minimum(2**s, c.oh), "ic": ic, "oc": oc}


def _cdiv(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """ceil(a / b) in float64: exact for the integer counts here (all below 2^44)."""
    return np.ceil(np.divide(a, b))


def orders(c: Conv) -> list[tuple[str, ...]]:
    """Loop orders (outermost first) that can differ: loops of one tile only are left out,
    and OW/OH are interchangeable on a square output."""
    used = [
        name
        for name, size in zip(LOOPS, (c.batch, c.ow, c.oh, c.ic, c.oc), strict=True)
        if size > 1
    ]
    out = []
    for order in itertools.permutations(used):
        if (
            c.ow == c.oh
            and "OW" in order
            and "OH" in order
            and order.index("OW") > order.index("OH")
        ):
            continue
        out.append(order)
    return out or [()]


def _bits() -> tuple[np.ndarray, np.ndarray]:
    """Weight and activation bits of the 64 pairs as (64, 1) columns, w-major."""
    w, a = np.meshgrid(np.arange(1, 9), np.arange(1, 9), indexing="ij")
    return w.reshape(-1, 1).astype(np.float64), a.reshape(-1, 1).astype(np.float64)


def _inner_loop(
    c: Conv, t: dict[str, np.ndarray], w: np.ndarray, a: np.ndarray, np_: np.ndarray, cols: int
) -> dict[str, np.ndarray]:
    """SRAM reads and output writes of the inner loop, input-, output- or weight-stationary
    by the simulator's estimate, per tile (before multiplying by the number of tiles)."""
    k2 = c.kh * c.kw
    is_loop = _cdiv(t["oc"], cols) * cols
    os_loop = _cdiv(k2 * t["ic"], np_) * np_ if c.im2col else _cdiv(t["ic"], np_) * np_ * k2
    ws_loop = t["b"] * t["oh"] * t["ow"]
    is_e = os_loop * ws_loop * (a + is_loop * (w + OUT_BITS))
    os_e = is_loop * ws_loop * (OUT_BITS + os_loop * (a + w))
    ws_e = os_loop * is_loop * (w + ws_loop * (a + OUT_BITS))
    best = np.minimum(np.minimum(is_e, os_e), ws_e)
    use_is, use_os = is_e == best, (os_e == best) & (is_e != best)
    x = k2 * t["ic"] * t["oh"] * t["ow"] * t["b"]
    out_per_tile = np.where(use_os, t["oc"] * ws_loop * OUT_BITS, x * t["oc"] * OUT_BITS)
    return {
        "act": np.where(use_is, x * a, x * t["oc"] * a),
        "wgt": np.where(use_is | use_os, x * t["oc"] * w, k2 * t["ic"] * t["oc"] * w),
        "out": out_per_tile,  # read and written alike
    }


def _tile_sizes(
    c: Conv, t: dict[str, np.ndarray], w: np.ndarray, a: np.ndarray, np_: np.ndarray, cols: int
) -> list[np.ndarray]:
    """Bits of one tile in the weight, input and output buffers, shape (64, tiles)."""
    k2 = c.kh * c.kw
    wgt = _cdiv(k2 * t["ic"], np_) * np_ * t["oc"] * w
    if c.im2col:
        act = t["ow"] * t["oh"] * k2 * t["ic"] * t["b"] * a
    else:
        iw, ih = c.kw + (t["ow"] - 1) * c.sw, c.kh + (t["oh"] - 1) * c.sh
        act = iw * ih * t["ic"] * t["b"] * a
    out = t["ow"] * t["oh"] * _cdiv(t["oc"], cols) * cols * t["b"] * OUT_BITS
    return [wgt, act, np.broadcast_to(out, wgt.shape)]


def _dram_traffic(
    order: tuple[str, ...], size: list[np.ndarray], counts: dict[str, np.ndarray], caps: list[float]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """DRAM bits moved into each buffer over the whole layer, and the largest block each
    buffer holds (what is loaded before the first tile and, for outputs, stored after)."""
    moved = [s.copy() for s in size]
    held = [s.copy() for s in size]
    keeping = [np.ones(s.shape, dtype=bool) for s in size]
    for loop in reversed(order):  # innermost first
        n = counts[loop]
        for i, dep in enumerate(DEPENDS[loop]):
            if dep:
                moved[i] = moved[i] * n
                keeping[i] &= moved[i] <= caps[i]
                held[i] = np.where(keeping[i], moved[i], held[i])
            else:
                moved[i] = np.where(keeping[i], moved[i], moved[i] * n)
    return moved, held


@lru_cache(maxsize=4096)
def simulate(c: Conv, params: tuple[tuple[str, float], ...]) -> dict[str, np.ndarray]:
    """The simulator's choice for one convolution at all 64 bit pairs: arrays of shape (64,)
    (w-major) of cycles, compute cycles and the ``DETAIL`` quantities (energies in J)."""
    p = dict(params)
    rows, cols, width = int(p["rows"]), int(p["cols"]), p["dram_bits_per_cycle"]
    caps = [p[f"{b}_buffer_kib"] * 8192 / 2 for b in ("weight", "input", "output")]
    w, a = _bits()
    np_ = rows * (8 // np.maximum(a, 2)) * (8 // np.maximum(w, 2))
    t = tiles(c, cols)
    size = _tile_sizes(c, t, w, a, np_, cols)
    fits = (size[0] <= caps[0]) & (size[1] <= caps[1]) & (size[2] <= caps[2])
    some = fits.any(axis=0)  # tiles that fit at no bit pair are dropped before the search
    t, fits, size = {k: v[some] for k, v in t.items()}, fits[:, some], [x[:, some] for x in size]
    counts = {
        "B": _cdiv(c.batch, t["b"]),
        "OW": _cdiv(c.ow, t["ow"]),
        "OH": _cdiv(c.oh, t["oh"]),
        "IC": _cdiv(c.ic, t["ic"]),
        "OC": _cdiv(c.oc, t["oc"]),
    }
    n_tiles = counts["B"] * counts["OW"] * counts["OH"] * counts["IC"] * counts["OC"]
    k2 = c.kh * c.kw
    if c.im2col:
        per_tile = t["b"] * t["oh"] * t["ow"] * _cdiv(t["oc"], cols) * _cdiv(k2 * t["ic"], np_)
    else:
        per_tile = t["b"] * _cdiv(t["oc"], cols) * t["ow"] * t["oh"] * k2 * _cdiv(t["ic"], np_)
    compute = n_tiles * per_tile
    inner = {k: n_tiles * v for k, v in _inner_loop(c, t, w, a, np_, cols).items()}
    sram_inner_pj = (
        inner["wgt"] * p["wbuf_read_pj_per_bit"]
        + inner["act"] * p["ibuf_read_pj_per_bit"]
        + inner["out"] * (p["obuf_read_pj_per_bit"] + p["obuf_write_pj_per_bit"])
    )
    best: dict[str, np.ndarray] = {}
    for order in orders(c):
        (mw, ma, mo), (hw_, ha, ho) = _dram_traffic(order, size, counts, caps)
        dram = mw + ma + 2 * mo
        first, last = hw_ + ha + ho, ho
        latency = _cdiv(first, width) + _cdiv(last, width)
        stall = np.maximum(0, _cdiv(dram - first - last, width) - compute) + latency
        sram_pj = sram_inner_pj + (
            mw * p["wbuf_write_pj_per_bit"]
            + ma * p["ibuf_write_pj_per_bit"]
            + mo * (p["obuf_read_pj_per_bit"] + p["obuf_write_pj_per_bit"])
        )
        cand = {
            "cycles": np.where(fits, compute + stall, np.inf),
            "compute_cycles": np.broadcast_to(compute, fits.shape),
            "stall_cycles": stall,
            "dram_bits": dram,
            "wbuf_bits": mw + inner["wgt"],
            "ibuf_bits": ma + inner["act"],
            "obuf_bits": 2 * mo + 2 * inner["out"],
            "core_energy_j": np.broadcast_to(compute * p["core_pj_per_cycle"] * 1e-12, fits.shape),
            "sram_energy_j": sram_pj * 1e-12,
            "dram_energy_j": dram * p["dram_pj_per_bit"] * 1e-12,
        }
        cand["energy_j"] = cand["core_energy_j"] + cand["sram_energy_j"] + cand["dram_energy_j"]
        _keep_better(best, cand)
    return best


def _keep_better(best: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> None:
    """Fold ``cand`` (arrays of shape (64, tiles)) into ``best`` (arrays of shape (64,)):
    per bit pair, the fewest cycles, then the least energy."""
    cycles = cand["cycles"]
    fewest = cycles.min(axis=1, keepdims=True)
    energy = np.where(cycles == fewest, cand["energy_j"], np.inf)
    pick = np.argmin(energy, axis=1)[:, None]
    chosen = {
        k: np.take_along_axis(np.broadcast_to(v, cycles.shape), pick, 1)[:, 0]
        for k, v in cand.items()
    }
    if not best:
        best.update(chosen)
        return
    better = (chosen["cycles"] < best["cycles"]) | (
        (chosen["cycles"] == best["cycles"]) & (chosen["energy_j"] < best["energy_j"])
    )
    for k, v in chosen.items():
        best[k] = np.where(better, v, best[k])


def costs(layers: Sequence[LayerSpec], hw: HardwareConfig) -> ArchCosts:
    """Cycles, latency, DRAM bytes, energy and the detail of every layer at every pair."""
    params = tuple(sorted(hw.params.items()))
    per_layer = []
    for spec in layers:
        sim = simulate(as_conv(spec, hw.batch), params)
        per_layer.append({k: v.reshape(8, 8) * spec.groups for k, v in sim.items()})
    stack = {k: np.stack([d[k] for d in per_layer]).astype(np.float64) for k in per_layer[0]}
    clock_hz = hw.params["clock_mhz"] * 1e6
    return ArchCosts(
        compute_cycles=stack["compute_cycles"],
        memory_cycles=stack["dram_bits"] / hw.params["dram_bits_per_cycle"],
        cycles=stack["cycles"],
        latency_s=stack["cycles"] / clock_hz,
        dram_bytes=stack["dram_bits"] / 8.0,
        energy_j=stack["energy_j"],
        detail={k: stack[k] for k in DETAIL},
    )
