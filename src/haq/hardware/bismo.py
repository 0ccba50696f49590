"""BISMO, the bit-serial matrix multiplication overlay (Umuroglu et al., FPL 2018).

A Dm x Dn array of dot-product units, each Dk bits wide, computes binary matrix products with
AND + popcount; a w-bit x a-bit product takes w * a binary products, shifted and accumulated.

Mapping (documented in docs/hardware-models.md):

- Every layer is lowered by im2col to GEMMs: LHS = activations (M = batch x OH x OW rows,
  K = kernel area x input channels per group), RHS = weights (K x N output channels per group).
  The lowered LHS is what BISMO reads from DRAM (the host lowers it), stored bit-serially with
  rows padded to Dm and K padded to Dk.
- Grouped/depthwise convolutions are per-group GEMMs. Because one group uses at most N columns
  of the Dn-wide array, ``floor(Dn / N)`` groups are packed side by side as a block-diagonal
  GEMM (P groups: K' = P*K, N' = P*N). A depthwise 3x3 then fills 72 of 256 lanes of each
  dot-product unit: poor compute utilisation and heavy (padded) LHS traffic, which is why
  depthwise layers look memory bound on the low-bandwidth edge configuration.
- Execute instructions: ceil(M/Dm) * ceil(N'/Dn) * w * a per packed GEMM, each streaming
  ceil(K'/Dk) slices plus ``instr_overhead_cycles``.
- DRAM bytes: RHS once per ``weight_fetch_images`` images of the batch (0: once per batch;
  1: once per image); LHS once when either operand fits its on-chip buffer, else
  once per RHS chunk that fits; results written at ``output_bits`` per element (0: requantized on chip
  to the layer's activation bits, as for BitFusion).
- Fetch, execute and result stages overlap: cycles = max(compute, memory) + fill/drain (the
  first LHS and RHS tile and the last result tile, which cannot overlap) + layer setup.
- No energy model has been published for BISMO: energy is not available.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from haq.hardware.config import FieldSpec, HardwareConfig
from haq.hardware.shapes import A_BITS, W_BITS, ArchCosts, ceil_div, gemm_shapes
from haq.layers import LayerSpec

HAS_ENERGY = False

FIELDS: dict[str, FieldSpec] = {
    "dm": FieldSpec("rows of the dot-product-unit array (LHS rows per tile)", integer=True),
    "dk": FieldSpec("bits per dot-product unit (K slice per cycle)", integer=True),
    "dn": FieldSpec("columns of the dot-product-unit array (RHS columns per tile)", integer=True),
    "clock_mhz": FieldSpec("clock frequency in MHz"),
    "dram_bandwidth_gbs": FieldSpec("peak DRAM bandwidth in GB/s (1e9 bytes/s)"),
    "dram_efficiency": FieldSpec("fraction of the peak bandwidth achieved, in (0, 1]", maximum=1.0),
    "lhs_buffer_kib": FieldSpec("on-chip LHS (activation) buffer in KiB"),
    "rhs_buffer_kib": FieldSpec("on-chip RHS (weight) buffer in KiB"),
    "instr_overhead_cycles": FieldSpec(
        "pipeline overhead per execute instruction, cycles", allow_zero=True
    ),
    "layer_setup_cycles": FieldSpec("fixed cycles per layer (instruction setup)", allow_zero=True),
    "weight_fetch_images": FieldSpec(
        "images of the batch served by one fetch of a layer's weights (1: fetched for every "
        "image; 0, the default: once per batch)",
        allow_zero=True,
        integer=True,
        default=0,
    ),
    "output_bits": FieldSpec(
        "bits per result element written to DRAM; 0 = requantized on chip to the layer's "
        "activation bits",
        allow_zero=True,
        integer=True,
    ),
}


def costs(layers: Sequence[LayerSpec], hw: HardwareConfig) -> ArchCosts:
    """Cycles, latency and DRAM bytes of every layer at every (w, a) pair in one pass."""
    p = hw.params
    dm, dk, dn = p["dm"], p["dk"], p["dn"]
    s = gemm_shapes(layers, hw.batch)
    w, a = W_BITS, A_BITS

    # block-diagonal packing of groups narrower than the array
    pack = np.where(s.groups > 1, np.clip(np.floor(dn / s.n), 1, s.groups), 1.0)
    n_gemms = ceil_div(s.groups, pack)
    k_p, n_p = pack * s.k, pack * s.n
    m_pad = ceil_div(s.m, dm) * dm
    k_pad = ceil_div(k_p, dk) * dk
    n_pad = ceil_div(n_p, dn) * dn

    instructions = n_gemms * (m_pad / dm) * (n_pad / dn) * w * a
    compute = instructions * (k_pad / dk + p["instr_overhead_cycles"])

    lhs_bytes = m_pad * k_pad * a / 8.0  # per packed GEMM, bit-serial and padded
    rhs_bytes = k_pad * n_pad * w / 8.0
    out_bits = a if p["output_bits"] == 0 else p["output_bits"]
    out_bytes = s.m * s.n * s.groups * out_bits / 8.0
    lhs_buf, rhs_buf = p["lhs_buffer_kib"] * 1024.0, p["rhs_buffer_kib"] * 1024.0
    fits = (rhs_bytes <= rhs_buf) | (lhs_bytes <= lhs_buf)
    lhs_reads = np.where(fits, 1.0, np.ceil(rhs_bytes / rhs_buf))
    rhs_fetches = np.ceil(hw.batch / (p["weight_fetch_images"] or hw.batch))
    dram_bytes = n_gemms * (rhs_bytes * rhs_fetches + lhs_bytes * lhs_reads) + out_bytes

    clock_hz = p["clock_mhz"] * 1e6
    bytes_per_cycle = p["dram_bandwidth_gbs"] * 1e9 * p["dram_efficiency"] / clock_hz
    memory = dram_bytes / bytes_per_cycle
    first_k = np.minimum(k_pad, dk)
    fill_drain_bytes = (dm * first_k * a + first_k * dn * w + dm * dn * out_bits) / 8.0
    cycles = (
        np.maximum(compute, memory) + fill_drain_bytes / bytes_per_cycle + p["layer_setup_cycles"]
    )
    shape = (len(layers), 8, 8)
    return ArchCosts(
        compute_cycles=np.broadcast_to(compute, shape).copy(),
        memory_cycles=np.broadcast_to(memory, shape).copy(),
        cycles=np.broadcast_to(cycles, shape).copy(),
        latency_s=np.broadcast_to(cycles / clock_hz, shape).copy(),
        dram_bytes=np.broadcast_to(dram_bytes, shape).copy(),
        energy_j=None,
    )


def peak_macs_per_s(hw: HardwareConfig, w_bits: int, a_bits: int) -> float:
    """Roofline compute peak: Dm*Dn*Dk binary ops per cycle, w*a of them per MAC."""
    p = hw.params
    return p["dm"] * p["dn"] * p["dk"] / (w_bits * a_bits) * p["clock_mhz"] * 1e6


def bandwidth_bytes_per_s(hw: HardwareConfig) -> float:
    """Roofline memory slope: effective DRAM bandwidth."""
    return hw.params["dram_bandwidth_gbs"] * 1e9 * hw.params["dram_efficiency"]
