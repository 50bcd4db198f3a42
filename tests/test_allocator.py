"""The C allocator's tuning: chunk-sized buffers reuse the heap's pages, and the free ones go
back to the system when the service is idle.

The glibc behaviour is checked in a child process, since `tune_allocator` changes the whole
process's allocator.
"""

from __future__ import annotations

import asyncio
import json
import platform
import subprocess
import sys
from typing import Any

import pytest

from dbx_backend.allocator import ReleaseWhenIdle
from dbx_backend.inflight import InFlight

GLIBC = platform.libc_ver()[0] == "glibc"

# Runs in a fresh interpreter: a stream's window of buffers of 250 KB, then a hole
# left inside the heap; prints the page faults of the window's 1,000 steps and the RSS before and
# after `release_free_memory`.
CHILD = """
import collections, json, resource
from dbx_backend.allocator import release_free_memory, tune_allocator

tuned = tune_allocator()
SIZE, WINDOW, STEPS = 250_000, 4, 1000


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


# A stream's buffers of a socket read's size: each step writes a new one, frees the oldest.
window = collections.deque(bytes([n % 256]) * SIZE for n in range(WINDOW))
before = faults()
for step in range(STEPS):
    window.append(bytes([step % 256]) * SIZE)
    window.popleft()
stream_faults = faults() - before
del window
# Thirty such buffers, then a smaller one above them that stays: freeing the thirty
# leaves a hole inside the heap, which only a release gives back.
buffers = [bytes([n]) * SIZE for n in range(30)]
kept = bytes(200_000)
del buffers
held = rss()
released = release_free_memory()
pages = STEPS * SIZE // resource.getpagesize()
print(json.dumps({
    "tuned": tuned, "faults": stream_faults, "pages_written": pages,
    "released": released, "rss_held": held, "rss_after_release": rss(),
}))
"""


def run_child() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(not GLIBC, reason="the tuning applies to glibc's allocator only")
def test_stream_sized_buffers_reuse_pages_and_idle_memory_is_given_back() -> None:
    result = run_child()
    assert result["tuned"] is True
    # 1,000 buffers write 61,000 pages; each in a mapping of its own would fault all of them
    # in (with glibc's 128 KiB threshold: 62,000 faults). From the heap, freed ones are reused
    # (about 60 faults).
    assert result["pages_written"] > 60_000
    assert result["faults"] < result["pages_written"] // 10, result
    # The 7.5 MB hole stays with the process until the idle release gives it back.
    assert result["released"] is True
    assert result["rss_held"] - result["rss_after_release"] > 5_000_000, result


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


async def test_release_comes_once_after_the_idle_delay() -> None:
    released = Counter()
    idle = ReleaseWhenIdle(after_s=0.05, release=released)
    idle.idle()
    idle.idle()  # a second idle restarts the wait, it does not add a release
    await asyncio.sleep(0.02)
    assert released.calls == 0
    for _ in range(100):  # bounded: at most 1 s
        if released.calls:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert released.calls == 1


async def test_a_request_starting_cancels_the_release_and_close_stops_it() -> None:
    released = Counter()
    idle = ReleaseWhenIdle(after_s=0.05, release=released)
    idle.idle()
    idle.busy()
    await asyncio.sleep(0.15)
    assert released.calls == 0
    idle.idle()
    idle.close()
    await asyncio.sleep(0.15)
    assert released.calls == 0


class Listener:
    def __init__(self) -> None:
        self.events: list[str] = []

    def busy(self) -> None:
        self.events.append("busy")

    def idle(self) -> None:
        self.events.append("idle")


async def test_in_flight_says_busy_at_the_first_request_and_idle_after_the_last() -> None:
    listener = Listener()
    in_flight = InFlight(listener)
    first = asyncio.create_task(asyncio.sleep(0))
    second = asyncio.create_task(asyncio.sleep(0))
    in_flight.enter(first)
    in_flight.enter(second)
    in_flight.leave(first)
    assert listener.events == ["busy"]
    in_flight.leave(second)
    assert listener.events == ["busy", "idle"]
    in_flight.enter(first)
    assert listener.events == ["busy", "idle", "busy"]
    in_flight.leave(first)
    await asyncio.gather(first, second)
    assert listener.events == ["busy", "idle", "busy", "idle"]
