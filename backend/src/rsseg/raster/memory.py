"""Keep the process heap from growing with the raster size.

Why: glibc raises its mmap threshold each time a large block is freed (up to 32 MB) and its trim
threshold with it, after which the engine's per-tile arrays (a few MB each, allocated and freed
thousands of times) come from a heap that is trimmed less and less; peak RSS then crept up with the
number of tiles. A fixed threshold stops that. It is 32 MB and not smaller: below it, every tile-
and strip-sized temporary is a fresh mmap whose pages fault in on first touch and go back to the OS
on free, which was a third of a job's CPU time as system time (`rsseg bench`, 8192²: 21.3 s with
10.5 s of system time at 1 MB, 16.9 s with 4.1 s at 32 MB; peak RSS at 2048² / 8192² / 16384²
325 / 338 / 347 MB). A no-op on other C libraries.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 32 << 20
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
