"""Host memory allocator settings for PyTorch on the CPU.

glibc's malloc gives every block above its dynamic mmap threshold straight back to the kernel
when it is freed, and trims the heap top above 128 kB. A CNN's forward and backward passes
allocate and free activation-sized blocks (hundreds of kB to tens of MB) thousands of times a
second, so each one costs fresh zeroed pages from the kernel: on the 2-core CI machine half of
a forward pass of the reference model was page faults (sys time). Keeping such blocks in the
heap makes the same passes 1.3-2x faster (benchmarks/bench_cpu.py) and changes no result.

:func:`tune_host_allocator` is called once by the ``haq`` command; Python API users may call
it themselves. It does nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt(3) parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 256 << 20  # free memory kept at the heap top before it is returned
TOP_PAD = 64 << 20  # extra heap grown at once, so growth is rare

_done = False


def tune_host_allocator() -> bool:
    """Keep freed activation-sized blocks in the process heap (see the module doc). Returns
    True when the settings were applied (glibc), False elsewhere; idempotent."""
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    ok = all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
        )
    )
    _done = ok
    return ok
