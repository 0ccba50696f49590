"""Layer shapes as broadcastable numpy columns, the common input of every cost model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from haq.layers import LayerSpec

BITS = np.arange(1, 9, dtype=np.float64)
W_BITS = BITS.reshape(1, 8, 1)  # axis 1 of every [L, 8, 8] table is the weight bit width
A_BITS = BITS.reshape(1, 1, 8)  # axis 2 is the activation bit width


@dataclass(frozen=True)
class GemmShapes:
    """Per-layer arrays of shape (L, 1, 1): each layer as ``groups`` GEMMs of
    (M x K) @ (K x N), with M = batch x output positions (im2col rows), K = kernel area x
    input channels per group, N = output channels per group; plus the feature-map sizes."""

    groups: np.ndarray
    m: np.ndarray
    k: np.ndarray
    n: np.ndarray
    kernel_area: np.ndarray
    in_ch_per_group: np.ndarray
    out_positions: np.ndarray  # per batch: batch x OH x OW
    in_elems_per_group: np.ndarray  # input feature-map elements per group, whole batch
    macs: np.ndarray  # whole batch


def gemm_shapes(layers: Sequence[LayerSpec], batch: int) -> GemmShapes:
    def col(values: list[float]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).reshape(-1, 1, 1)

    g = [float(s.groups) for s in layers]
    area = [float(s.kernel[0] * s.kernel[1]) for s in layers]
    icg = [s.in_channels / s.groups for s in layers]
    ocg = [s.out_channels / s.groups for s in layers]
    pos = [float(batch * s.positions) for s in layers]
    in_elems = [batch * s.in_hw[0] * s.in_hw[1] * s.in_channels / s.groups for s in layers]
    return GemmShapes(
        groups=col(g),
        m=col(pos),
        k=col([a * c for a, c in zip(area, icg, strict=True)]),
        n=col(ocg),
        kernel_area=col(area),
        in_ch_per_group=col(icg),
        out_positions=col(pos),
        in_elems_per_group=col(in_elems),
        macs=col([float(batch * s.macs) for s in layers]),
    )


def ceil_div(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    return np.ceil(np.asarray(a, dtype=np.float64) / b)


@dataclass(frozen=True)
class ArchCosts:
    """What an architecture model returns, every array of shape [L, 8, 8] (layer, w-1, a-1)."""

    compute_cycles: np.ndarray
    memory_cycles: np.ndarray
    cycles: np.ndarray
    latency_s: np.ndarray
    dram_bytes: np.ndarray
    energy_j: np.ndarray | None
    detail: dict[str, np.ndarray] = field(default_factory=dict)  # model-specific [L, 8, 8]
