"""BitFusion, the bit-level dynamically composable accelerator (Sharma et al., ISCA 2018).

Each Fusion Unit (FU) has 16 BitBricks (2-bit x 2-bit multipliers) that fuse to serve 2-, 4-
or 8-bit operands; an N x M array of FUs (N input rows, M output columns) then performs
``pf = (8 / cb(a)) * (8 / cb(w))`` times more MACs per cycle than at 8x8, where ``cb`` rounds
the bit width up to the next brick size (1,2 -> 2; 3,4 -> 4; 5..8 -> 8). Storage and DRAM
traffic use the true bit widths.

Mapping (documented in docs/hardware-models.md):

- Compute cycles per group: the better of the direct form
  ``B * ceil(OC/M) * OH * OW * KH*KW * ceil(IC/(N*pf))`` and the im2col form
  ``B * OH * OW * ceil(OC/M) * ceil(KH*KW*IC/(N*pf))`` (the im2col form suits layers with few
  input channels such as the first). The original design has no depthwise support: a depthwise
  layer is modelled honestly as one GEMM per channel using a single output column.
- Tiling under the buffers (each usable at half its size, for double buffering), two loop
  orders, the one moving fewer DRAM bits wins:
  A) weight-stationary: weights read once, inputs once per output-channel tile, partial sums
     (``psum_bits``) spilled and re-read once per extra input-channel tile;
  B) input-stationary: inputs read once, weights once per input tile, outputs written once.
- Finished outputs are written at ``output_bits``; 0 means requantized on chip to the layer's
  activation bit width (the per-layer table cannot see the next layer's bits, so this layer's
  ``a`` stands in for them). Set 32 to model outputs leaving the chip unquantized.
- Cycles = compute + max(0, memory - compute) + initial load + final store, with memory cycles
  = DRAM bits / (DRAM bits per cycle).
- Energy = core energy per compute cycle + SRAM bits x pJ/bit per buffer + DRAM bits x pJ/bit
  (no leakage, as the paper's 45 nm figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from haq.hardware.config import FieldSpec, HardwareConfig
from haq.hardware.shapes import A_BITS, W_BITS, ArchCosts, GemmShapes, ceil_div, gemm_shapes
from haq.layers import LayerSpec

HAS_ENERGY = True

FIELDS: dict[str, FieldSpec] = {
    "rows": FieldSpec("N: input rows of the fusion-unit array", integer=True),
    "cols": FieldSpec("M: output columns of the fusion-unit array", integer=True),
    "clock_mhz": FieldSpec("clock frequency in MHz"),
    "weight_buffer_kib": FieldSpec("weight buffer in KiB"),
    "input_buffer_kib": FieldSpec("input buffer in KiB"),
    "output_buffer_kib": FieldSpec("output buffer in KiB"),
    "dram_bits_per_cycle": FieldSpec("DRAM interface width, bits per cycle"),
    "psum_bits": FieldSpec("bits of a partial sum spilled to DRAM", integer=True),
    "output_bits": FieldSpec(
        "bits of a finished output written to DRAM; 0 = requantized on chip to the layer's "
        "activation bits",
        allow_zero=True,
        integer=True,
    ),
    "core_pj_per_cycle": FieldSpec(
        "energy of the whole array per compute cycle, pJ", allow_zero=True
    ),
    "wbuf_read_pj_per_bit": FieldSpec("weight buffer read energy, pJ/bit", allow_zero=True),
    "wbuf_write_pj_per_bit": FieldSpec("weight buffer write energy, pJ/bit", allow_zero=True),
    "ibuf_read_pj_per_bit": FieldSpec("input buffer read energy, pJ/bit", allow_zero=True),
    "ibuf_write_pj_per_bit": FieldSpec("input buffer write energy, pJ/bit", allow_zero=True),
    "obuf_read_pj_per_bit": FieldSpec("output buffer read energy, pJ/bit", allow_zero=True),
    "obuf_write_pj_per_bit": FieldSpec("output buffer write energy, pJ/bit", allow_zero=True),
    "dram_pj_per_bit": FieldSpec("DRAM access energy, pJ/bit", allow_zero=True),
}


def compute_bits(bits: np.ndarray) -> np.ndarray:
    """Bit width the BitBricks actually compute at: 2, 4 or 8."""
    return np.where(bits <= 2, 2.0, np.where(bits <= 4, 4.0, 8.0))


def precision_factor(w_bits: np.ndarray, a_bits: np.ndarray) -> np.ndarray:
    """MACs per fusion unit per cycle relative to 8x8: 8x8 -> 1, 4x4 -> 4, 2x2 -> 16."""
    return (8.0 / compute_bits(a_bits)) * (8.0 / compute_bits(w_bits))


class _Traffic(NamedTuple):
    """DRAM bits per layer and (w, a) of the cheaper loop order, and what sizes them."""

    w: np.ndarray
    i: np.ndarray
    o: np.ndarray
    obuf_passes: np.ndarray  # output-buffer read-modify-write passes per output element
    w_total: np.ndarray  # one copy of the weights, bits
    i_total: np.ndarray  # one copy of the inputs, bits
    o_total: np.ndarray  # one copy of the finished outputs, bits


def _traffic(s: GemmShapes, w: np.ndarray, a: np.ndarray, p: dict[str, float]) -> _Traffic:
    """Tile under the half-size buffers; keep the loop order that moves fewer DRAM bits."""
    w_total = s.k * s.n * w
    i_total = s.in_elems_per_group * a
    o_elems = s.m * s.n
    o_total = o_elems * (a if p["output_bits"] == 0 else p["output_bits"])
    wcap = p["weight_buffer_kib"] * 8192.0 / 2
    icap = p["input_buffer_kib"] * 8192.0 / 2
    cols_used = np.minimum(p["cols"], s.n)
    # A) weight-stationary
    full_ic_fits = s.k * cols_used * w <= wcap
    oc_tile = np.where(full_ic_fits, np.minimum(s.n, np.floor(wcap / (s.k * w))), cols_used)
    ic_tile = np.where(
        full_ic_fits,
        s.in_ch_per_group,
        np.maximum(1.0, np.floor(wcap / (s.kernel_area * cols_used * w))),
    )
    n_oc = ceil_div(s.n, np.maximum(oc_tile, 1.0))
    n_ic = ceil_div(s.in_ch_per_group, ic_tile)
    a_w, a_i = w_total, i_total * n_oc
    a_o = o_total + o_elems * p["psum_bits"] * 2 * (n_ic - 1)  # spilled partial sums
    # B) input-stationary
    n_in = ceil_div(i_total, icap)
    b_w, b_i, b_o = w_total * n_in, i_total, o_total
    use_a = (a_w + a_i + a_o) <= (b_w + b_i + b_o)
    return _Traffic(
        w=s.groups * np.where(use_a, a_w, b_w),
        i=s.groups * np.where(use_a, a_i, b_i),
        o=s.groups * np.where(use_a, a_o, b_o),
        obuf_passes=np.where(use_a, n_ic, 1.0),
        w_total=w_total,
        i_total=i_total,
        o_total=o_total,
    )


def costs(layers: Sequence[LayerSpec], hw: HardwareConfig) -> ArchCosts:
    """Cycles, latency, DRAM bytes and energy of every layer at every (w, a) pair."""
    p = hw.params
    rows, cols = p["rows"], p["cols"]
    s = gemm_shapes(layers, hw.batch)
    w, a = W_BITS, A_BITS
    pf = precision_factor(w, a)

    oc_tiles = ceil_div(s.n, cols)
    direct = s.m * oc_tiles * s.kernel_area * ceil_div(s.in_ch_per_group, rows * pf)
    im2col = s.m * oc_tiles * ceil_div(s.k, rows * pf)
    compute = s.groups * np.minimum(direct, im2col)

    t = _traffic(s, w, a, p)
    dram_bits = t.w + t.i + t.o
    memory = dram_bits / p["dram_bits_per_cycle"]
    wcap = p["weight_buffer_kib"] * 8192.0 / 2
    icap = p["input_buffer_kib"] * 8192.0 / 2
    ocap = p["output_buffer_kib"] * 8192.0 / 2
    first = (np.minimum(t.w_total, wcap) + np.minimum(t.i_total, icap)) / p["dram_bits_per_cycle"]
    last = np.minimum(t.o_total, ocap) / p["dram_bits_per_cycle"]
    cycles = compute + np.maximum(0.0, memory - compute) + first + last

    obuf_bits = s.groups * s.m * s.n * p["psum_bits"] * t.obuf_passes
    energy_pj = (
        compute * p["core_pj_per_cycle"]
        + s.macs * w * p["wbuf_read_pj_per_bit"]
        + t.w * p["wbuf_write_pj_per_bit"]
        + s.macs * a / np.minimum(cols, s.n) * p["ibuf_read_pj_per_bit"]
        + t.i * p["ibuf_write_pj_per_bit"]
        + obuf_bits * (p["obuf_read_pj_per_bit"] + p["obuf_write_pj_per_bit"])
        + dram_bits * p["dram_pj_per_bit"]
    )
    clock_hz = p["clock_mhz"] * 1e6
    shape = (len(layers), 8, 8)
    return ArchCosts(
        compute_cycles=np.broadcast_to(compute, shape).copy(),
        memory_cycles=np.broadcast_to(memory, shape).copy(),
        cycles=np.broadcast_to(cycles, shape).copy(),
        latency_s=np.broadcast_to(cycles / clock_hz, shape).copy(),
        dram_bytes=np.broadcast_to(dram_bits / 8.0, shape).copy(),
        energy_j=np.broadcast_to(energy_pj * 1e-12, shape).copy(),
    )


def peak_macs_per_s(hw: HardwareConfig, w_bits: int, a_bits: int) -> float:
    """Roofline compute peak: rows x cols fusion units, ``pf`` MACs each per cycle."""
    p = hw.params
    pf = float(precision_factor(np.array(w_bits), np.array(a_bits)))
    return p["rows"] * p["cols"] * pf * p["clock_mhz"] * 1e6


def bandwidth_bytes_per_s(hw: HardwareConfig) -> float:
    """Roofline memory slope: DRAM bits per cycle x clock."""
    return hw.params["dram_bits_per_cycle"] / 8.0 * hw.params["clock_mhz"] * 1e6
