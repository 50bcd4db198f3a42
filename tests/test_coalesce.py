"""Coalescing: identical requests share one statement, in a process and across replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from dbx_backend.engine.cache_store import CacheEntry, MemoryStore
from dbx_backend.engine.coalesce import Coalescer, Shared, decode_failure, encode_failure
from dbx_backend.engine.memory import MemoryBusy
from dbx_backend.engine.redis_state import RedisState
from dbx_backend.engine.shared_state import LocalState
from dbx_backend.warehouse.errors import StatementFailed
from tests.redisserver import RedisServer


def entry(body: bytes = b'{"rows":[[1]]}') -> CacheEntry:
    return CacheEntry.create(
        body, stored_at=1_700_000_000.0, ttl_s=60, stale_s=0, row_count=1, statement_id="s1"
    )


class Statement:
    """A stand-in for running a statement: counts runs, finishes when the test says."""

    def __init__(self, result: CacheEntry | Exception | None = None) -> None:
        self.runs = 0
        self.cancelled = 0
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.result = result if result is not None else entry()

    async def __call__(self) -> CacheEntry:
        self.runs += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def local_coalescer() -> Coalescer:
    return Coalescer(LocalState(MemoryStore(1_000_000, 100_000)))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_identical_requests_in_flight_share_one_run() -> None:
    coalescer, statement = local_coalescer(), Statement()

    waiters = [asyncio.create_task(coalescer.run("k", statement, timeout_s=5)) for _ in range(10)]
    await settle()
    statement.release.set()
    results = await asyncio.gather(*waiters)

    assert statement.runs == 1
    assert all(r.entry == entry() for r in results)
    assert [r.coalesced for r in results].count(False) == 1


async def test_different_keys_run_separately() -> None:
    coalescer, statement = local_coalescer(), Statement()
    statement.release.set()

    await asyncio.gather(
        coalescer.run("a", statement, timeout_s=5), coalescer.run("b", statement, timeout_s=5)
    )

    assert statement.runs == 2


async def test_a_waiter_past_its_deadline_leaves_without_stopping_the_others() -> None:
    coalescer, statement = local_coalescer(), Statement()
    patient = asyncio.create_task(coalescer.run("k", statement, timeout_s=5))
    await statement.started.wait()

    with pytest.raises(TimeoutError):
        await coalescer.run("k", statement, timeout_s=0.01)
    statement.release.set()
    result = await patient

    assert result.entry == entry()
    assert (statement.runs, statement.cancelled) == (1, 0)


async def test_the_run_is_cancelled_when_every_waiter_has_left() -> None:
    coalescer, statement = local_coalescer(), Statement()
    waiters = [asyncio.create_task(coalescer.run("k", statement, timeout_s=5)) for _ in range(3)]
    await statement.started.wait()

    for waiter in waiters[:2]:
        waiter.cancel()
    await settle()
    cancelled_while_one_waits = statement.cancelled
    waiters[2].cancel()
    await settle()

    assert cancelled_while_one_waits == 0
    assert statement.cancelled == 1
    assert not coalescer.in_flight("k")


async def test_a_failure_reaches_every_waiter_and_the_next_request_runs_again() -> None:
    coalescer = local_coalescer()
    failing = Statement(StatementFailed("[TABLE_OR_VIEW_NOT_FOUND] t", statement_id="s9"))
    waiters = [asyncio.create_task(coalescer.run("k", failing, timeout_s=5)) for _ in range(3)]
    await settle()
    failing.release.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    fresh = Statement()
    fresh.release.set()

    again = await coalescer.run("k", fresh, timeout_s=5)

    assert all(isinstance(o, StatementFailed) for o in outcomes)
    assert failing.runs == 1
    assert fresh.runs == 1
    assert again.entry == entry()


def test_a_failure_survives_its_trip_between_replicas() -> None:
    original = StatementFailed(
        "[DIVIDE_BY_ZERO] oops", error_code="BAD_REQUEST", statement_id="s1", sql_state="22012"
    )

    copy = decode_failure(encode_failure(original))

    assert type(copy) is StatementFailed
    assert (copy.message, copy.error_code, copy.statement_id, copy.sql_state) == (
        original.message,
        "BAD_REQUEST",
        "s1",
        "22012",
    )


MakeReplica = Callable[[], Awaitable[Coalescer]]


@pytest.fixture
async def replica(redis_server: RedisServer) -> AsyncIterator[MakeReplica]:
    states: list[RedisState] = []

    async def make() -> Coalescer:
        state = RedisState(
            redis_server.url, LocalState(MemoryStore(1_000_000, 100_000)), timeout_s=2
        )
        states.append(state)
        return Coalescer(state, lock_ttl_s=1.0, check_every_s=0.05)

    yield make
    for state in states:
        await state.close()


def following(coalescer: Coalescer) -> asyncio.Event:
    """Set once `coalescer` found a flight held by another replica: it has subscribed to the
    flight's news by then, so it hears how the flight ends. Tests wait for this rather than
    for a fixed time: on a loaded machine a replica may take longer to get that far."""
    found = asyncio.Event()
    holder = coalescer.state.holder

    async def watched(name: str) -> str | None:
        token = await holder(name)
        if token is not None:
            found.set()
        return token

    coalescer.state.holder = watched  # type: ignore[method-assign]
    return found


async def led_and_followed(
    replica: MakeReplica, leader: Statement, follower: Statement
) -> tuple[asyncio.Task[Shared], asyncio.Task[Shared]]:
    """Two replicas on one Redis asked for key "k": the first runs `leader`; once it started,
    the second asks (running `follower` if it must run its own) and is waited for until it
    follows the first one's flight."""
    one, other = await replica(), await replica()
    other_follows = following(other)
    first = asyncio.create_task(one.run("k", leader, timeout_s=5))
    await leader.started.wait()
    second = asyncio.create_task(other.run("k", follower, timeout_s=5))
    async with asyncio.timeout(10):  # bounded: a replica follows within milliseconds
        await other_follows.wait()
    return first, second


async def test_replicas_on_one_redis_share_one_run(replica: MakeReplica) -> None:
    statement = Statement()

    first, second = await led_and_followed(replica, statement, statement)
    statement.release.set()
    results = await asyncio.gather(first, second)

    assert statement.runs == 1
    assert [r.entry for r in results] == [entry(), entry()]
    assert [r.coalesced for r in results] == [False, True]


async def test_a_failure_on_one_replica_reaches_waiters_on_another(replica: MakeReplica) -> None:
    failing = Statement(StatementFailed("[PARSE_SYNTAX_ERROR] near x", statement_id="s2"))

    first, second = await led_and_followed(replica, failing, failing)
    failing.release.set()
    outcomes = await asyncio.gather(first, second, return_exceptions=True)

    assert failing.runs == 1
    assert [type(o) for o in outcomes] == [StatementFailed, StatementFailed]
    assert str(outcomes[1]) == "[PARSE_SYNTAX_ERROR] near x"


async def test_when_the_holder_gives_up_a_waiter_on_another_replica_runs_it(
    replica: MakeReplica,
) -> None:
    abandoned, taken_over = Statement(), Statement()
    taken_over.release.set()

    first, second = await led_and_followed(replica, abandoned, taken_over)
    first.cancel()
    result = await second

    assert abandoned.cancelled == 1
    assert taken_over.runs == 1
    assert result.entry == entry()


async def test_when_the_holder_was_refused_memory_a_waiter_on_another_replica_runs_it(
    replica: MakeReplica,
) -> None:
    refused = Statement(MemoryBusy("the memory budget stays full", waited_s=0.1))
    own = Statement()
    own.release.set()

    first, second = await led_and_followed(replica, refused, own)
    refused.release.set()
    outcomes = await asyncio.gather(first, second, return_exceptions=True)

    assert isinstance(outcomes[0], MemoryBusy)  # its own replica answers 503 SERVICE_BUSY
    assert outcomes[1] == Shared(entry(), coalesced=False)  # not a shared failure
    assert own.runs == 1
