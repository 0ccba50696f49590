"""The ``tvm-bitserial`` runner of ``haq hardware measure``: a bit-serial kernel compiled by
Apache TVM (``pip install 'haq[tvm]'``) for this CPU, timed through TVM's runtime.

Each layer is the integer matrix product it is on a bit-serial machine (groups x rows x
columns x depth, :func:`haq.hardware.bitserial.layer_problem`). The kernel takes the
activation codes as bytes (eight to a 64-bit word, the im2col rows of the layer), packs them
into ``a`` bit planes of ``word``-bit words inside the kernel, and sums
``popcount(A_i AND W_j) << (i + j)`` over the planes and words, as TVM's ``bitserial_dense``
does, with a group axis so that depthwise layers are one kernel too. The word is the
smallest of 8, 16, 32, 64 bits that holds a row's depth (up to 64), so a 3x3 depthwise row
is one 16-bit word, not a padded 64-bit one.

Schedule (TVM 0.27 ships the bit-serial compute definitions but no CPU schedules for them):
- compiled for the host's instruction set (``popcnt``, AVX2 where ``/proc/cpuinfo`` lists
  them; LLVM's generic x86-64 has no popcount instruction and emulates it);
- bits are packed with one multiply per eight codes (the bit of each byte gathered into one
  byte), not one shift per code;
- layers with several output columns: parallel over (group, row); a row's planes are packed
  once, next to their use, then dotted with every column, the bit loops unrolled;
- depthwise layers (one column per group): parallel over groups, the packing vectorised over
  rows. (Vectorising the dot over rows as well makes TVM 0.27's LLVM build hang; not done.)
Thread count: TVM's runtime default (one per core) or ``TVM_NUM_THREADS``.

A kernel is compiled once per (layer problem, w, a), on its first call (the measurement's
warm-up run; 0.05-0.2 s); the time returned is the kernel call's alone, by TVM's timer. Exact:
:func:`bitserial_product` equals the integer matrix product (tests/test_tvm_runner.py).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from haq.errors import HaqError
from haq.hardware.bitserial import layer_problem
from haq.layers import LayerSpec

LSB = 0x0101010101010101  # bit 0 of every byte
GATHER = 0x8040201008040201  # (x & LSB) * GATHER >> 56: the 8 byte bits as one byte
MIN_TIMED_MS = 2  # each timing repeats the kernel for at least this long
VECTOR = 8  # rows packed per vector in depthwise layers
FEATURES = ("popcnt", "sse4.2", "avx", "avx2", "fma", "bmi2")  # LLVM names; cpuinfo: sse4_2


def require_tvm() -> Any:
    """The ``tvm`` module, or one clear line on how to install it."""
    try:
        import tvm
    except ImportError as err:
        raise HaqError(
            "the tvm-bitserial runner needs Apache TVM: pip install 'haq[tvm]' "
            "(or use --runner bitserial, numpy)"
        ) from err
    return tvm


def word_bits(k: int) -> int:
    """Bits per packed word for a row of depth ``k``: the smallest of 8/16/32/64 that holds
    it (64 beyond)."""
    return next((w for w in (8, 16, 32) if k <= w), 64)


@lru_cache(maxsize=1)
def host_target() -> Any:
    """LLVM for this CPU: x86-64 plus the features of :data:`FEATURES` it has (read from
    ``/proc/cpuinfo``; plain LLVM elsewhere)."""
    tvm = require_tvm()
    info = Path("/proc/cpuinfo")
    flags: set[str] = set()
    if info.is_file():
        line = next((x for x in info.read_text().splitlines() if x.startswith("flags")), "")
        flags = set(line.split(":", 1)[-1].split())
    mattr = [f"+{f}" for f in FEATURES if f.replace(".", "_") in flags]
    return tvm.target.Target({"kind": "llvm", "mattr": mattr} if mattr else {"kind": "llvm"})


def _pack_expr(x: Any, gg: Any, row: Any, b: Any, kk: Any, per: int, dtype: str) -> Any:
    """Bit ``b`` of the codes of word ``kk`` of a row: ``per`` bytes-of-8 gathered by a
    multiply each."""
    from tvm import tirx

    u64 = "uint64"
    acc = tirx.const(0, u64)
    for q in range(per):
        bits = (x[gg, row, kk * per + q] >> b.astype(u64)) & tirx.const(LSB, u64)
        byte = (bits * tirx.const(GATHER, u64)) >> tirx.const(56, u64)
        acc = acc | (byte << tirx.const(8 * q, u64))
    return acc.astype(dtype)


@lru_cache(maxsize=256)  # a whole network at a few policies (bench_measured end to end)
def _kernel(g: int, m: int, n: int, k: int, w_bits: int, a_bits: int) -> Any:
    """The compiled module; its ``main(codes (g, m, words * word / 8) uint64 of bytes, weight planes
    (g, n, w, words) uint<word>, out (g, m, n) int32)``."""
    tvm = require_tvm()
    from tvm import s_tir, te, tirx

    word = word_bits(k)
    words, per, dtype = -(-k // word), word // 8, f"uint{word}"
    x = te.placeholder((g, m, words * per), dtype="uint64", name="codes")
    w_planes = te.placeholder((g, n, w_bits, words), dtype=dtype, name="w_planes")
    depthwise = n == 1 and g > 1
    if depthwise:  # planes (g, a, words, m): rows innermost, for the vectorised packing
        planes = te.compute((g, a_bits, words, m), lambda gg, b, kk, row: _pack_expr(x, gg, row, b, kk, per, dtype), name="pack")  # fmt: skip
        plane = lambda gg, i, kk, row: planes[gg, i, kk, row]  # noqa: E731
    else:
        planes = te.compute((g, m, a_bits, words), lambda gg, row, b, kk: _pack_expr(x, gg, row, b, kk, per, dtype), name="pack")  # fmt: skip
        plane = lambda gg, i, kk, row: planes[gg, row, i, kk]  # noqa: E731
    kk = te.reduce_axis((0, words), name="kk")
    i = te.reduce_axis((0, a_bits), name="i")
    j = te.reduce_axis((0, w_bits), name="j")

    def dot(gg: Any, row: Any, col: Any) -> Any:
        hits = tirx.popcount(plane(gg, i, kk, row) & w_planes[gg, col, j, kk])
        return te.sum(hits.astype("int32") << (i + j).astype("int32"), axis=[kk, i, j])

    out = te.compute((g, m, n), dot, name="out")
    sch = s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([x, w_planes, out])}))
    gl, ml, _, _, il, jl = sch.get_loops(sch.get_sblock("out"))
    if depthwise:
        sch.parallel(gl)
        sch.compute_at(sch.get_sblock("pack"), gl)
        rows = sch.get_loops(sch.get_sblock("pack"))[-1]
        sch.vectorize(sch.split(rows, [None, VECTOR])[1])
    else:
        rows = sch.fuse(gl, ml)
        sch.parallel(rows)
        sch.compute_at(sch.get_sblock("pack"), rows)
    sch.unroll(il)
    sch.unroll(jl)
    return tvm.compile(sch.mod, target=host_target()).mod


def pack_weights(w: np.ndarray, bits: int) -> np.ndarray:
    """Weight codes (g, n, k) as bit planes (g, n, bits, words) of ``word_bits(k)``-bit
    words, bits in the kernel's order (any order works as long as both operands share it)."""
    g, n, k = w.shape
    word = word_bits(k)
    x = code_bytes(w)  # (g, n, words * per) uint64
    per = word // 8
    xs = x.reshape(g, n, -1, per)
    planes = np.zeros((g, n, bits, xs.shape[2]), dtype=np.uint64)
    for b in range(bits):
        for q in range(per):
            byte = (((xs[..., q] >> np.uint64(b)) & np.uint64(LSB)) * np.uint64(GATHER)) >> np.uint64(56)  # fmt: skip
            planes[:, :, b] |= byte << np.uint64(8 * q)
    return planes.astype(f"uint{word}")


def code_bytes(codes: np.ndarray) -> np.ndarray:
    """Codes (g, r, k) < 256 as the kernel reads them: bytes, eight to a little-endian
    uint64, each row zero-padded to whole words."""
    g, r, k = codes.shape
    word = word_bits(k)
    full = np.zeros((g, r, -(-k // word) * word), dtype=np.uint8)
    full[..., :k] = codes
    return full.view("<u8").astype(np.uint64)


def bitserial_product(acts: np.ndarray, w: np.ndarray, w_bits: int, a_bits: int) -> tuple[np.ndarray, float]:  # fmt: skip
    """(``acts @ w^T`` per group as int32 (g, m, n), seconds per kernel call) for unsigned
    codes ``acts`` (g, m, k) < 2^a_bits and ``w`` (g, n, k) < 2^w_bits. The time is TVM's
    own timer (``time_evaluator``: the kernel repeated in C++ for at least
    :data:`MIN_TIMED_MS`, the mean per call), free of Python's call overhead (~20 us here)."""
    tvm = require_tvm()
    g, m, k = acts.shape
    n = w.shape[1]
    module = _kernel(g, m, n, k, w_bits, a_bits)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(x, dev) for x in (code_bytes(acts), pack_weights(w, w_bits))]
    out = tvm.runtime.tensor(np.zeros((g, m, n), dtype=np.int32), dev)
    module["main"](*args, out)
    timer = module.time_evaluator("main", dev, number=1, repeat=1, min_repeat_ms=MIN_TIMED_MS)
    return out.numpy(), float(timer(*args, out).mean)


def time_layer(layer: LayerSpec, w_bits: int, a_bits: int, batch: int) -> float:
    """Seconds of one TVM bit-serial evaluation of ``layer`` at ``w_bits``/``a_bits`` on
    random codes (the activations' packing included, the weights packed beforehand)."""
    g, m, n, k = layer_problem(layer, batch)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 2**a_bits, size=(g, m, k), dtype=np.int64)
    w = rng.integers(0, 2**w_bits, size=(g, n, k), dtype=np.int64)
    return bitserial_product(acts, w, w_bits, a_bits)[1]
