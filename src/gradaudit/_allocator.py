"""glibc malloc tuning for large-batch autograd on the CPU.

With glibc's defaults, the big temporary buffers of a large-batch forward/backward are
returned to the OS after every use (mmap for blocks over the threshold, trimming of the
heap top) and page-faulted back in on the next step. Raising the mmap and trim thresholds
keeps them in the heap; on a 2-core AVX2 machine this roughly halves the time of such
steps (see ``bench/bench_train_throughput.py``). It is a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: keep freed blocks below this in the heap


@functools.cache
def tune_malloc() -> bool:
    """Raise glibc's mmap/trim thresholds for this process; True if it took effect."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, _THRESHOLD) == 1
    return bool(ok)
