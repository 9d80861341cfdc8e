"""Keep freed host memory in the allocator instead of returning it to the kernel (glibc only).

A CPU forward pass allocates and frees tens of megabytes per op (a 32 x 430-token batch's feed-forward
intermediate is 60 MB). glibc serves blocks that large with `mmap` and unmaps them on `free`, so every
op pays page faults and kernel zeroing for its output again: on a 2-core box that is 10-20% of a
mixed-length forward pass. Raising the mmap and trim thresholds makes freed blocks reusable, as
jemalloc or tcmalloc would; the process keeps its peak heap instead of shrinking after each op.
Set GLICLASS_MALLOC_TUNING=0 to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LIMIT = 2**31 - 1  # mallopt takes an int
_done = False


def retain_freed_memory() -> bool:
    """Apply once per process; True when glibc accepted both settings."""
    global _done
    if _done:
        return True
    if os.environ.get("GLICLASS_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, _LIMIT))
    _done = ok
    log.debug("glibc mmap/trim thresholds raised: %s", ok)
    return ok
