"""Hand freed heap memory back to the OS between the phases of a model preparation.

glibc keeps freed chunks below its mmap threshold (up to 32 MB) in the process heap, and a
heap fragmented by thousands of per-tensor arrays rarely shrinks by itself: dequantizing a
1.5B model's Q6_K embedding left 0.8 GB of freed memory resident (benchmarks/RESULTS.md).
`malloc_trim(0)` returns it. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def trim() -> None:
    """Release the heap's free memory to the OS (glibc only)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
