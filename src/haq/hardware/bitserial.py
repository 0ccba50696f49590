"""A bit-serial integer kernel on this CPU: the ``bitserial`` runner of ``haq hardware measure``.

Bit-serial accelerators (BISMO, and TVM's ``bitserial_conv2d`` on CPUs) compute an integer dot
product of ``a``-bit activations and ``w``-bit weights as ``sum_ij 2^(i+j) popcount(A_i AND
W_j)`` over the bit planes ``A_i``, ``W_j`` packed 64 to a word, so its time grows with
``w x a``. This is that computation in numpy (vectorised AND and ``bitwise_count`` over packed
planes, the activations packed per call, the weights once): a real kernel whose time on this
machine depends on the bits, to build a measured cost table with no accelerator at hand.

Unsigned codes: activations in ``[0, 2^a)``, weights in ``[0, 2^w)`` (a signed weight is an
offset code plus a correction term that costs one extra row sum; left out of the timing).
Exact: :func:`bitserial_matmul` equals the integer matrix product.
"""

from __future__ import annotations

import time

import numpy as np

from haq.layers import LayerSpec

_CHUNK = 512  # output rows per step: bounds the (rows, cols, words) intermediate


def pack_planes(x: np.ndarray, bits: int) -> np.ndarray:
    """Bit planes of non-negative integer codes ``x`` (..., K) packed along K into uint64
    words: shape (bits, ..., ceil(K / 64))."""
    k = x.shape[-1]
    words = -(-k // 64)
    pad = np.zeros((*x.shape[:-1], words * 64 - k), dtype=np.uint64)
    full = np.concatenate([x.astype(np.uint64), pad], axis=-1)
    planes = (full[None] >> np.arange(bits, dtype=np.uint64).reshape(-1, *([1] * x.ndim))) & 1
    chunks = planes.reshape(*planes.shape[:-1], words, 64)
    return (chunks << np.arange(64, dtype=np.uint64)).sum(axis=-1, dtype=np.uint64)


def bitserial_matmul(a_planes: np.ndarray, w_planes: np.ndarray) -> np.ndarray:
    """``A @ W.T`` for packed planes ``a_planes`` (a, G, M, words) and ``w_planes``
    (w, G, N, words): int64 (G, M, N)."""
    _, g, m, _ = a_planes.shape
    n = w_planes.shape[2]
    out = np.zeros((g, m, n), dtype=np.int64)
    for start in range(0, m, _CHUNK):
        rows = slice(start, start + _CHUNK)
        for i, a_i in enumerate(a_planes):
            block = a_i[:, rows, None, :]
            for j, w_j in enumerate(w_planes):
                hits = np.bitwise_count(block & w_j[:, None, :, :]).sum(axis=-1, dtype=np.int64)
                out[:, rows] += hits << (i + j)
    return out


def layer_problem(layer: LayerSpec, batch: int) -> tuple[int, int, int, int]:
    """The integer matrix product a layer is: (groups, rows M, columns N, depth K)."""
    g = 1 if layer.kind == "linear" else layer.groups
    kh, kw = layer.kernel
    rows = batch * layer.positions
    return g, rows, layer.out_channels // g, (layer.in_channels // g) * kh * kw


def time_layer(layer: LayerSpec, w_bits: int, a_bits: int, batch: int) -> float:
    """Seconds of one bit-serial evaluation of ``layer`` at ``w_bits``/``a_bits`` (the
    activations' packing included, the weights packed beforehand), on random codes."""
    g, m, n, k = layer_problem(layer, batch)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 2**a_bits, size=(g, m, k), dtype=np.int64)
    w_planes = pack_planes(rng.integers(0, 2**w_bits, size=(g, n, k), dtype=np.int64), w_bits)
    t0 = time.perf_counter()
    bitserial_matmul(pack_planes(acts, a_bits), w_planes)
    return time.perf_counter() - t0
