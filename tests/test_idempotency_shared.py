"""Idempotency-Keys across replicas: two stores, each with its own Redis client, on one real
Redis, behave as one store; without Redis each answers on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from dbx_backend.engine.cache_store import MemoryStore
from dbx_backend.engine.idempotency import (
    IdempotencyKeyReused,
    IdempotencyStore,
    Submitted,
    claim_name,
)
from dbx_backend.engine.redis_state import RedisState
from dbx_backend.engine.shared_state import LocalState
from dbx_backend.warehouse.errors import RateLimited, ResponseLost, StatementFailed
from tests.redisserver import RedisServer

KEY = ("caller-digest", "key-1")
ANSWER = Submitted("handle-1", "PENDING", "01f0-statement")

Submit = Callable[[], Awaitable[Submitted]]


class Replicas:
    """Two idempotency stores, as two replicas would hold them, on one Redis."""

    def __init__(self, url: str, *, timeout_s: float = 2.0, retry_s: float = 5.0) -> None:
        self.states = [
            RedisState(
                url,
                LocalState(MemoryStore(1_000_000, 100_000)),
                timeout_s=timeout_s,
                retry_s=retry_s,
            )
            for _ in range(2)
        ]
        self.one, self.other = (
            IdempotencyStore(60.0, shared=state, check_every_s=0.05) for state in self.states
        )

    async def close(self) -> None:
        for state in self.states:
            await state.close()


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[Replicas]:
    pair = Replicas(redis_server.url)
    try:
        yield pair
    finally:
        await pair.close()


class Warehouse:
    """Counts submits; each answers `answer` (or raises `failure`) once `release` is set."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.calls = 0
        self.failure = failure
        self.release = asyncio.Event()
        self.release.set()

    def submitter(self, answer: Submitted = ANSWER) -> Submit:
        async def submit() -> Submitted:
            self.calls += 1
            await self.release.wait()
            if self.failure is not None:
                raise self.failure
            return answer

        return submit


async def test_a_key_used_on_one_replica_is_answered_by_the_other(replicas: Replicas) -> None:
    warehouse = Warehouse()

    first = await replicas.one.submit_once(KEY, "body", warehouse.submitter())
    again = await replicas.other.submit_once(
        KEY, "body", warehouse.submitter(Submitted("h2", "PENDING", "other"))
    )

    assert first == again == ANSWER
    assert warehouse.calls == 1


async def test_concurrent_repeats_on_two_replicas_share_one_submit(replicas: Replicas) -> None:
    warehouse = Warehouse()
    warehouse.release.clear()

    answers = asyncio.gather(
        replicas.one.submit_once(KEY, "body", warehouse.submitter()),
        replicas.other.submit_once(KEY, "body", warehouse.submitter()),
    )
    for _ in range(200):  # bounded: until one replica's submit reached the warehouse
        if warehouse.calls:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the other replica is waiting on the claim by now
    warehouse.release.set()

    assert list(await answers) == [ANSWER, ANSWER]
    assert warehouse.calls == 1


async def test_the_key_with_another_body_on_the_other_replica_is_refused(
    replicas: Replicas,
) -> None:
    warehouse = Warehouse()
    await replicas.one.submit_once(KEY, "body", warehouse.submitter())

    with pytest.raises(IdempotencyKeyReused):
        await replicas.other.submit_once(KEY, "another body", warehouse.submitter())
    again = await replicas.other.submit_once(KEY, "body", warehouse.submitter())

    assert again == ANSWER
    assert warehouse.calls == 1


async def test_a_failure_that_may_have_run_is_replayed_by_the_other_replica(
    replicas: Replicas,
) -> None:
    warehouse = Warehouse(ResponseLost("the answer was lost", may_have_run=True))

    with pytest.raises(ResponseLost):
        await replicas.one.submit_once(KEY, "body", warehouse.submitter())
    with pytest.raises(ResponseLost) as replayed:
        await replicas.other.submit_once(KEY, "body", warehouse.submitter())

    assert replayed.value.may_have_run is True
    assert warehouse.calls == 1


async def test_a_sql_failure_is_replayed_with_its_class_and_message(replicas: Replicas) -> None:
    failure = StatementFailed("[DIVIDE_BY_ZERO] Division by zero", sql_state="22012")
    warehouse = Warehouse(failure)

    with pytest.raises(StatementFailed):
        await replicas.one.submit_once(KEY, "body", warehouse.submitter())
    with pytest.raises(StatementFailed) as replayed:
        await replicas.other.submit_once(KEY, "body", warehouse.submitter())

    assert (replayed.value.message, replayed.value.sql_state) == (failure.message, "22012")
    assert warehouse.calls == 1


async def test_a_submit_that_never_ran_is_forgotten_so_the_other_replica_may_try(
    replicas: Replicas,
) -> None:
    throttled = Warehouse(RateLimited("slow down", status=429))
    working = Warehouse()

    with pytest.raises(RateLimited):
        await replicas.one.submit_once(KEY, "body", throttled.submitter())
    answer = await replicas.other.submit_once(KEY, "body", working.submitter())

    assert answer == ANSWER
    assert (throttled.calls, working.calls) == (1, 1)


async def test_a_repeat_waiting_on_another_replica_is_not_its_own_submit(
    replicas: Replicas,
) -> None:
    warehouse = Warehouse()
    warehouse.release.clear()
    first = asyncio.ensure_future(replicas.one.submit_once(KEY, "body", warehouse.submitter()))
    for _ in range(200):  # bounded: until the first replica submits
        if warehouse.calls:
            break
        await asyncio.sleep(0.01)
    repeat = asyncio.ensure_future(replicas.other.submit_once(KEY, "body", warehouse.submitter()))
    await asyncio.sleep(0.1)

    # At shutdown a replica cancels only the submits it sent itself.
    assert (len(replicas.one.running()), len(replicas.other.running())) == (1, 0)
    warehouse.release.set()
    assert list(await asyncio.gather(first, repeat)) == [ANSWER, ANSWER]


async def test_a_claim_left_by_a_vanished_replica_lapses_and_the_other_submits(
    replicas: Replicas,
) -> None:
    warehouse = Warehouse()
    # A replica took the key and died mid-submit: nobody extends or releases its claim.
    assert await replicas.states[0].acquire(claim_name(KEY), 0.3) is not None

    answer = await replicas.other.submit_once(KEY, "body", warehouse.submitter())

    assert answer == ANSWER
    assert warehouse.calls == 1


async def test_without_redis_each_replica_answers_on_its_own(redis_server: RedisServer) -> None:
    pair = Replicas(redis_server.url, timeout_s=0.2, retry_s=0.0)
    redis_server.stop()
    warehouse = Warehouse()
    try:
        first = await pair.one.submit_once(KEY, "body", warehouse.submitter())
        repeat = await pair.one.submit_once(KEY, "body", warehouse.submitter())
        elsewhere = await pair.other.submit_once(KEY, "body", warehouse.submitter())
    finally:
        await pair.close()

    assert first == repeat == elsewhere == ANSWER
    assert warehouse.calls == 2  # one per process, as without CACHE_URL
