"""The ``tvm-bitserial`` runner of ``haq hardware measure``: a bit-serial kernel compiled by
Apache TVM (``pip install 'haq[tvm]'``) for this CPU, timed through TVM's runtime.

Each layer is the integer matrix product it is on a bit-serial machine (groups x rows x
columns x depth, :func:`haq.hardware.bitserial.layer_problem`): the activation codes are
packed into ``a`` bit planes of 32-bit words inside the kernel with TVM's own ``bitpack``
(``tvm.topi.nn.bitserial_util``), the weights are packed beforehand, and the kernel sums
``popcount(A_i AND W_j) << (i + j)`` over the planes, as TVM's ``bitserial_dense`` does, with
a group axis so depthwise layers are one kernel too. TVM 0.27 ships the bit-serial compute
definitions but no CPU schedules for them, so the loop nest is compiled by LLVM as defined
(serial, not tuned): its times rank bit pairs and layers on this machine, they are not the
best this CPU can do.

A kernel is compiled once per (layer problem, w, a), on its first call (the measurement's
warm-up run); the time returned is the kernel call's alone. Exact: :func:`bitserial_product`
equals the integer matrix product.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import numpy as np

from haq.errors import HaqError
from haq.hardware.bitserial import layer_problem
from haq.layers import LayerSpec

WORD = 32  # bits per packed word (uint32)


def _tvm() -> Any:
    try:
        import tvm
        from tvm.topi.nn.bitserial_util import bitpack  # noqa: F401  (present in the build)
    except ImportError as err:
        raise HaqError(
            "the tvm-bitserial runner needs Apache TVM: pip install 'haq[tvm]' "
            "(or use --runner bitserial, numpy)"
        ) from err
    return tvm


@lru_cache(maxsize=64)
def _kernel(g: int, m: int, n: int, k: int, w_bits: int, a_bits: int) -> Any:
    """The compiled kernel: f(codes (g, m, words*32) uint32, packed weights (g, n, w, words)
    uint32, out (g, m, n) int32)."""
    tvm = _tvm()
    from tvm import te, tirx
    from tvm.topi.nn.bitserial_util import bitpack

    words = -(-k // WORD)
    codes = te.placeholder((g, m, words * WORD), dtype="uint32", name="codes")
    w_planes = te.placeholder((g, n, w_bits, words), dtype="uint32", name="w_planes")
    a_planes = bitpack(codes, a_bits, pack_axis=2, bit_axis=2, pack_type="uint32")
    kk = te.reduce_axis((0, words), name="kk")
    i = te.reduce_axis((0, a_bits), name="i")
    j = te.reduce_axis((0, w_bits), name="j")

    def dot(gg: Any, row: Any, col: Any) -> Any:
        hits = tirx.popcount(a_planes[gg, row, i, kk] & w_planes[gg, col, j, kk])
        return te.sum(hits.astype("int32") << (i + j).astype("int32"), axis=[kk, i, j])

    out = te.compute((g, m, n), dot, name="out")
    func = te.create_prim_func([codes, w_planes, out])
    return tvm.compile(tvm.IRModule({"main": func}), target="llvm")["main"]


def pack_weights(w: np.ndarray, bits: int) -> np.ndarray:
    """Weight codes (g, n, k) as bit planes (g, n, bits, words) of uint32, the first element
    of a word in its most significant bit (the order of TVM's ``bitpack``)."""
    g, n, k = w.shape
    words = -(-k // WORD)
    full = np.zeros((g, n, words * WORD), dtype=np.uint64)
    full[..., :k] = w
    planes = (full[:, :, None, :] >> np.arange(bits, dtype=np.uint64)[:, None]) & 1
    shifts = np.arange(WORD - 1, -1, -1, dtype=np.uint64)
    packed = (planes.reshape(g, n, bits, words, WORD) << shifts).sum(axis=-1)
    return packed.astype(np.uint32)


def bitserial_product(acts: np.ndarray, w: np.ndarray, w_bits: int, a_bits: int) -> tuple[np.ndarray, float]:  # fmt: skip
    """(``acts @ w^T`` per group as int32 (g, m, n), seconds of the kernel call) for
    unsigned codes ``acts`` (g, m, k) < 2^a_bits and ``w`` (g, n, k) < 2^w_bits."""
    tvm = _tvm()
    g, m, k = acts.shape
    n = w.shape[1]
    kernel = _kernel(g, m, n, k, w_bits, a_bits)
    words = -(-k // WORD)
    codes = np.zeros((g, m, words * WORD), dtype=np.uint32)
    codes[..., :k] = acts
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(x, dev) for x in (codes, pack_weights(w, w_bits))]
    out = tvm.runtime.tensor(np.zeros((g, m, n), dtype=np.int32), dev)
    t0 = time.perf_counter()
    kernel(*args, out)
    return out.numpy(), time.perf_counter() - t0


def time_layer(layer: LayerSpec, w_bits: int, a_bits: int, batch: int) -> float:
    """Seconds of one TVM bit-serial evaluation of ``layer`` at ``w_bits``/``a_bits`` on
    random codes (the activations' packing included, the weights packed beforehand)."""
    g, m, n, k = layer_problem(layer, batch)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 2**a_bits, size=(g, m, k), dtype=np.int64)
    w = rng.integers(0, 2**w_bits, size=(g, n, k), dtype=np.int64)
    return bitserial_product(acts, w, w_bits, a_bits)[1]
