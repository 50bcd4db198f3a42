"""Cached entries, the bounded in-process store, and the shared state on real Redis."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from dbx_backend.engine.cache_store import ENTRY_OVERHEAD_BYTES, CacheEntry, MemoryStore
from dbx_backend.engine.redis_state import RedisState
from dbx_backend.engine.shared_state import SAMPLES_KEPT, LocalState, SharedState
from tests.conftest import WALL_CLOCK_START, FakeClock
from tests.redisserver import RedisServer


def entry(body: bytes = b'{"rows":[[1]]}', *, stored_at: float = 1_700_000_000.0) -> CacheEntry:
    return CacheEntry.create(
        body, stored_at=stored_at, ttl_s=60, stale_s=30, row_count=1, statement_id="s1"
    )


def test_an_entry_is_fresh_then_stale_then_expired() -> None:
    e = entry(stored_at=1000.0)

    assert e.is_fresh(1059.9)
    assert not e.in_stale_window(1059.9)
    assert not e.is_fresh(1060.0)
    assert e.in_stale_window(1060.0)
    assert not e.in_stale_window(1090.0)
    assert e.remaining_s(1030.0) == 30.0


def test_the_etag_is_strong_and_follows_the_body() -> None:
    assert entry(b"a").etag == entry(b"a").etag
    assert entry(b"a").etag != entry(b"b").etag
    assert entry(b"a").etag.startswith('"')
    assert not entry(b"a").etag.startswith("W/")


def test_an_entry_survives_its_byte_form() -> None:
    original = entry(b'{"rows":[["x\\ny"]]}\n')

    assert CacheEntry.from_bytes(original.to_bytes()) == original


@pytest.mark.parametrize("data", [b"", b"no header", b"{}\nbody", b"[1]\n"])
def test_bytes_that_are_not_an_entry_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a cache entry"):
        CacheEntry.from_bytes(data)


def test_the_store_evicts_the_least_recently_used_past_its_byte_budget() -> None:
    body = b"x" * 1000
    size = len(body) + ENTRY_OVERHEAD_BYTES
    store = MemoryStore(max_bytes=3 * size, max_entry_bytes=10_000)
    for key in ("a", "b", "c"):
        store.put(key, entry(body), keep_s=60)

    store.get("a")  # a is now the most recently used
    store.put("d", entry(body), keep_s=60)

    assert store.get("b") is None
    assert [k for k in ("a", "c", "d") if store.get(k) is not None] == ["a", "c", "d"]
    assert store.stats.evictions == 1
    assert store.stats.bytes_held == 3 * size


def test_an_entry_over_the_entry_cap_is_not_stored() -> None:
    store = MemoryStore(max_bytes=1_000_000, max_entry_bytes=100)

    stored = store.put("big", entry(b"x" * 101), keep_s=60)

    assert not stored
    assert store.get("big") is None
    assert store.stats.bytes_held == 0


def test_replacing_an_entry_counts_its_bytes_once() -> None:
    store = MemoryStore(max_bytes=1_000_000, max_entry_bytes=10_000)

    store.put("k", entry(b"x" * 100), keep_s=60)
    store.put("k", entry(b"y" * 50), keep_s=60)

    assert store.stats.bytes_held == 50 + ENTRY_OVERHEAD_BYTES
    assert len(store) == 1


def test_an_entry_past_its_keeping_time_is_dropped() -> None:
    clock = FakeClock(WALL_CLOCK_START)
    store = MemoryStore(max_bytes=1_000_000, max_entry_bytes=10_000, clock=clock)
    store.put("k", entry(), keep_s=90)

    clock.now += 89
    kept = store.get("k")
    clock.now += 1

    assert kept is not None
    assert store.get("k") is None
    assert store.stats.bytes_held == 0


@pytest.fixture(params=["local", "redis"])
async def state(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SharedState]:
    local = LocalState(MemoryStore(1_000_000, 100_000))
    if request.param == "local":
        yield local
        return
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        shared = RedisState(server.url, local, timeout_s=2.0)
        try:
            yield shared
        finally:
            await shared.close()


async def test_entries_round_trip(state: SharedState) -> None:
    stored = await state.put_entry("k", entry(), keep_s=60)

    assert stored
    assert await state.get_entry("k") == entry()
    assert await state.get_entry("other") is None


async def test_a_lock_has_one_holder_until_released(state: SharedState) -> None:
    token = await state.acquire("L", ttl_s=10)
    second = await state.acquire("L", ttl_s=10)
    holder = await state.holder("L")
    await state.release("L", "not-the-token")
    still = await state.holder("L")
    assert token is not None
    await state.release("L", token)

    assert second is None
    assert holder == still == token
    assert await state.holder("L") is None
    assert await state.acquire("L", ttl_s=10) is not None


async def test_only_the_holder_extends_its_lock(state: SharedState) -> None:
    token = await state.acquire("L", ttl_s=10)
    assert token is not None

    assert await state.extend("L", token, ttl_s=10)
    assert not await state.extend("L", "someone-else", ttl_s=10)


async def test_news_reaches_subscribers(state: SharedState) -> None:
    async with state.subscribe("c") as first, state.subscribe("c") as second:
        await state.publish("c", b"done t1")
        got = [await first.next(2.0), await second.next(2.0)]
        nothing = await first.next(0.01)

    assert got == [b"done t1", b"done t1"]
    assert nothing is None


async def test_samples_keep_the_latest(state: SharedState) -> None:
    for value in range(SAMPLES_KEPT + 5):
        await state.push_sample("starts", float(value))

    samples = await state.samples("starts")

    assert len(samples) == SAMPLES_KEPT
    assert samples[0] == SAMPLES_KEPT + 4


async def test_values_can_be_set_only_if_absent(state: SharedState) -> None:
    first = await state.set_value("v", "one", ttl_s=10, only_if_absent=True)
    second = await state.set_value("v", "two", ttl_s=10, only_if_absent=True)
    value = await state.get_value("v")
    await state.delete_value("v")

    assert (first, second, value) == (True, False, "one")
    assert await state.get_value("v") is None


async def test_blobs_round_trip(state: SharedState) -> None:
    await state.put_blob("b", b"\x00\x01data", ttl_s=10)

    assert await state.get_blob("b") == b"\x00\x01data"
    assert await state.get_blob("missing") is None


async def test_entries_stored_by_one_replica_are_read_by_another(
    redis_server: RedisServer,
) -> None:
    one = RedisState(redis_server.url, LocalState(MemoryStore(1_000_000, 100_000)))
    other = RedisState(redis_server.url, LocalState(MemoryStore(1_000_000, 100_000)))
    try:
        await one.put_entry("k", entry(), keep_s=60)
        seen = await other.get_entry("k")
    finally:
        await one.close()
        await other.close()

    assert seen == entry()


async def test_without_redis_the_state_works_per_process_and_says_so_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[int] = []
    state = RedisState(
        redis_server.url,
        LocalState(MemoryStore(1_000_000, 100_000)),
        timeout_s=0.2,
        retry_s=0.0,  # try Redis on every call: each failure is met
        on_failure=lambda: failures.append(1),
    )
    redis_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="dbx_backend.engine.redis_state"):
            stored = await state.put_entry("k", entry(), keep_s=60)
            found = await state.get_entry("k")
            token = await state.acquire("L", ttl_s=10)
    finally:
        await state.close()

    assert stored
    assert found == entry()
    assert token is not None
    assert len(failures) == 3
    warnings = [r for r in caplog.records if "Redis (CACHE_URL) unavailable" in r.message]
    assert len(warnings) == 1


async def test_redis_is_used_again_once_it_is_back(redis_server: RedisServer) -> None:
    state = RedisState(
        redis_server.url, LocalState(MemoryStore(1_000_000, 100_000)), timeout_s=0.5, retry_s=0.0
    )
    other = RedisState(redis_server.url, LocalState(MemoryStore(1_000_000, 100_000)))
    try:
        redis_server.stop()
        await state.put_entry("during-outage", entry(), keep_s=60)
        redis_server.start()
        await state.put_entry("after", entry(), keep_s=60)
        seen_after = await other.get_entry("after")
        seen_during = await other.get_entry("during-outage")
    finally:
        await state.close()
        await other.close()

    assert seen_after == entry()
    assert seen_during is None  # it was kept by the process that stored it, alone
