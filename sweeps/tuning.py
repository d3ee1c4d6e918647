"""Process tuning for the processes that run the simulator (Ray workers, `stoprace simulate`).

glibc returns every large freed block (> 128 KiB by default, adaptively more) to
the kernel, so each chunk-sized NumPy temporary is mmap'ed and page-faulted
afresh: measured at half the CPU time of the cmc estimator as system time.
Raising the mmap and trim thresholds keeps those blocks in the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30
_done = False


def tune_allocator() -> bool:
    """Keep large freed blocks in the heap (glibc only; elsewhere a no-op). Idempotent.

    Returns True if glibc accepted the settings.
    """
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    _done = ok
    return ok
