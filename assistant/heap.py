"""Hand freed heap memory back to the OS: after a model preparation's phases, and after the
worker's load and warm-up.

glibc keeps freed chunks below its mmap threshold (up to 32 MB) in the process heap, and a
heap fragmented by thousands of per-tensor arrays rarely shrinks by itself: dequantizing a
1.5B model's Q6_K embedding left 0.8 GB of freed memory resident, and ORT's discarded
load-time copies ~43 MB of the worker (benchmarks/RESULTS.md). `malloc_trim(0)` returns it.
Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any


@functools.cache
def _malloc_trim() -> Any:
    # dlopen(NULL): the symbols already loaded, with no file access (the sandboxed worker
    # may open no library path) and no subprocess (ctypes.util.find_library runs some).
    return getattr(ctypes.CDLL(None), "malloc_trim", None)


def trim() -> None:
    """Release the heap's free memory to the OS (glibc only)."""
    malloc_trim = _malloc_trim()
    if malloc_trim is not None:
        malloc_trim(0)
