"""The C allocator tuned for a service that relays result chunks (glibc only).

By default glibc serves a request of 128 KiB or more from a mapping of its own at first, and
raises that threshold (up to 32 MiB) whenever such a block is freed. Neither suits this service:

- A block in its own mapping goes back to the system when freed, and the next one is mapped
  afresh: every page of it is faulted in again. A stream passes all its bytes through such
  blocks (socket reads of up to 256 KiB, slices of NDJSON lines of about 200 KB, downloads,
  chunked writes), so one 1M-row stream from the local warehouse faulted in about 55,000 pages
  (NDJSON: 72,000): on an Arrow stream the kernel's share was a third of the service's CPU.
- Once the threshold has risen, the heap keeps what is freed: the process's RSS stays at its
  largest burst for good.

So the threshold is fixed at 320 KiB, chosen by measurement: socket reads and slices of lines
come from the heap and reuse its pages, while chunk-sized and larger buffers (downloads, whole
answer bodies) keep a mapping of their own, returned when freed. A higher threshold was faster
still (640 KiB: about half the page faults again) but let a buffered answer's growing buffers
leave holes in the heap: its peak went from 1.4 to up to 2.3 times its body. The heap returns
free memory at its top at once (trim threshold 128 KiB, glibc's default); what is free inside
it goes back when no request has run for a second (`release_free_memory`, `malloc_trim`). Two
arenas bound what the converting threads keep.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable

# mallopt parameters (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 320 * 1024
ARENA_MAX = 2
IDLE_RELEASE_S = 1.0

_malloc_trim: Callable[[int], int] | None = None


def tune_allocator() -> bool:
    """Apply the settings, before the process starts threads; False where the C library is
    not glibc (nothing is changed then, and `release_free_memory` does nothing)."""
    global _malloc_trim
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim.restype = ctypes.c_int
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (M_ARENA_MAX, ARENA_MAX),
    )
    if not all([mallopt(parameter, value) for parameter, value in settings]):
        return False
    _malloc_trim = malloc_trim
    return True


def release_free_memory() -> bool:
    """Give the free pages of every arena back to the system; True if any was given back.
    Nothing happens unless `tune_allocator` succeeded (the heap then keeps free memory)."""
    return _malloc_trim is not None and bool(_malloc_trim(0))


class ReleaseWhenIdle:
    """Calls `release` once no request has run for `after_s`: `InFlight` says when the last
    request ends (`idle`) and when the next starts (`busy`)."""

    def __init__(
        self,
        after_s: float = IDLE_RELEASE_S,
        release: Callable[[], object] = release_free_memory,
    ) -> None:
        self._after_s = after_s
        self._release = release
        self._timer: asyncio.TimerHandle | None = None

    def idle(self) -> None:
        self.busy()
        self._timer = asyncio.get_running_loop().call_later(self._after_s, self._fire)

    def busy(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    close = busy

    def _fire(self) -> None:
        self._timer = None
        self._release()
