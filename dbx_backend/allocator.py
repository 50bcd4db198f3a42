"""The C allocator told to give large buffers back to the system (glibc only).

glibc serves a request of 128 KiB or more from a mapping of its own at first, but raises that
threshold whenever such a block is freed (up to 32 MiB). After a few large bodies the next ones
come from the heap, which keeps what is freed: the process's RSS then stays at its largest
burst, and growing a buffer there copies it. A fixed threshold keeps every large buffer (result
chunks, answer bodies) in its own mapping, grown in place and returned when freed, so the
memory budget is what the process really holds. Two arenas bound what the converting threads
keep for themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024
ARENA_MAX = 2


def tune_allocator() -> bool:
    """Apply both settings, before the process starts threads; False where the C library is
    not glibc (nothing is changed then)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_ARENA_MAX, ARENA_MAX)
    )
