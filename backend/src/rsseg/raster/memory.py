"""Keep the process heap from growing with the raster size.

Why: glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
the engine's per-tile arrays (a few MB each, allocated and freed thousands of times) come from the
heap, which fragments; peak RSS then creeps up with the number of tiles. A fixed 1 MB threshold
returns every large array to the OS when it is freed. Measured with `rsseg bench`; a no-op on
other C libraries.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20
_done = False


def bound_heap_growth() -> None:
    global _done
    if _done or not sys.platform.startswith("linux"):
        return
    _done = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass
