"""A CPU run keeps the memory it frees, instead of handing it back to the kernel at every step.

PyTorch takes a CPU tensor's memory from the C library's malloc. glibc serves a block larger than
its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it on free, and hands the
free top of its heap back once it passes the trim threshold. A ResNet-32 step allocates and frees
its activations every time, so every step faulted its memory in anew from the kernel, zeroed a
page at a time: about a million minor page faults for one floor measurement (some 20 training
steps at batch 128, scoring at batch 1,000), on the 2-core Intel Xeon with AMX. Keeping freed memory for reuse
(no mmap, trim only above 1 GiB) took that to a few dozen and scored 1.32× faster
(docs/BENCHMARKS.md); training was not measurably faster. The cost: the process keeps its peak
heap until it ends (1.3 → 1.7 GiB for that measurement).

Only glibc takes these settings (``mallopt``); elsewhere this does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
#: the free heap top above this is still handed back: a run that freed a large data set once
#: does not keep it for ever
TRIM_ABOVE = 1 << 30
_done: str | None = None


def keep_freed_memory() -> str:
    """Tell glibc's malloc to keep freed memory for reuse (once a process); the phrase a run
    says: what was done, or why nothing was."""
    global _done
    if _done is not None:
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _done = "malloc as it is (not glibc)"
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE) == 1:
        _done = "freed memory kept for reuse"
    else:
        _done = "malloc as it is (mallopt refused)"
    return _done
