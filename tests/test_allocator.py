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

# Runs in a fresh interpreter: 40 rounds of twelve 600 KB buffers (the size of a result chunk),
# each written in full and freed; then the page faults of the rounds after the first, and the
# RSS with the last round's buffers freed, before and after `release_free_memory`.
CHILD = """
import json, resource, sys
from dbx_backend.allocator import release_free_memory, tune_allocator

tuned = tune_allocator()
SIZE, COUNT = 600_000, 12
keep = []

def round_trip():
    buffers = [bytes([n]) * SIZE for n in range(COUNT)]
    keep.append(bytes(64))  # something small allocated after them, as a service would
    del buffers

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()

round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(39):
    round_trip()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
held = rss()
released = release_free_memory()
print(json.dumps({
    "tuned": tuned, "faults": faults, "pages_written": 39 * COUNT * SIZE // resource.getpagesize(),
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
def test_chunk_sized_buffers_reuse_pages_and_idle_memory_is_given_back() -> None:
    result = run_child()
    assert result["tuned"] is True
    # 39 rounds write 68,000+ pages; in their own mappings each would be faulted in afresh.
    assert result["pages_written"] > 60_000
    assert result["faults"] < result["pages_written"] // 20, result
    # The last round's 7.2 MB stay with the heap (under its 16 MiB trim threshold) until the
    # idle release gives them back.
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
