"""Warehouse cold starts: reading the state, starting it once, the ETA, waiting for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from dbx_backend.config import Settings, load_settings
from dbx_backend.engine.cache_store import MemoryStore
from dbx_backend.engine.redis_state import RedisState
from dbx_backend.engine.shared_state import LocalState, SharedState
from dbx_backend.engine.warehouse_state import WarehouseStatus, WarehouseTracker
from dbx_backend.localwarehouse import LocalWarehouse
from dbx_backend.localwarehouse.faults import Fault
from dbx_backend.warehouse import errors as dbx
from dbx_backend.warehouse.client import WarehouseClient
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import TEST_HOST, WALL_CLOCK_START, FakeClock, StartLocalWarehouse
from tests.redisserver import RedisServer

TOKEN = "dapi-warehouse-state-0123456789"
WAREHOUSE = f"{TEST_HOST}/api/2.0/sql/warehouses/wh123"


# -- the transport's two calls, unit-tested on the wire ----------------------------------


async def test_get_warehouse_reads_the_state(settings: Settings, mocked: aioresponses) -> None:
    mocked.get(WAREHOUSE, payload={"id": "wh123", "state": "STARTING", "num_clusters": 0})

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        info = await client.get_warehouse()

    assert (info.id, info.state, info.health) == ("wh123", "STARTING", None)


async def test_an_unknown_state_is_kept_as_sent(settings: Settings, mocked: aioresponses) -> None:
    mocked.get(WAREHOUSE, payload={"id": "wh123", "state": "HIBERNATING"})

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        info = await client.get_warehouse()

    assert info.state == "HIBERNATING"


async def test_start_is_not_repeated_after_an_answer_that_may_have_reached_it(
    settings: Settings, mocked: aioresponses
) -> None:
    mocked.post(WAREHOUSE + "/start", status=500, payload={"message": "boom"}, repeat=True)

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        with pytest.raises(dbx.ServerError):
            await client.start_warehouse()

    assert len(mocked.requests[("POST", URL(WAREHOUSE + "/start"))]) == 1


# -- the tracker against the local warehouse, over loopback --------------------------------


@dataclass
class Setup:
    warehouse: LocalWarehouse
    client: WarehouseClient
    clock: FakeClock

    def tracker(self, state: SharedState | None = None, **options: Any) -> WarehouseTracker:
        return WarehouseTracker(
            self.client,
            state or LocalState(MemoryStore(1_000_000, 100_000)),
            warehouse_id=self.warehouse.config.warehouse_id,
            clock=self.clock,
            sleep=self.clock.sleep,
            **options,
        )

    def calls(self, endpoint: str) -> int:
        return sum(1 for r in self.warehouse.requests if r.endpoint == endpoint)


MakeSetup = Callable[..., Awaitable[Setup]]


@pytest.fixture
async def setup(local_warehouse: StartLocalWarehouse) -> AsyncIterator[MakeSetup]:
    opened: list[WarehouseClient] = []
    clock = FakeClock(WALL_CLOCK_START)

    async def make(**config: Any) -> Setup:
        warehouse = await local_warehouse(
            clock=clock, **{"token": TOKEN, "wait_timeout_scale": 1.0, **config}
        )
        settings = load_settings(
            {
                "DATABRICKS_HOST": warehouse.url,
                "DATABRICKS_HTTP_PATH": warehouse.http_path,
                "DATABRICKS_TOKEN": TOKEN,
            },
            env_file=None,
        )
        client = await WarehouseClient(settings, policy=NO_WAIT).__aenter__()
        opened.append(client)
        return Setup(warehouse, client, clock)

    yield make
    for client in opened:
        await client.__aexit__(None, None, None)


async def test_a_running_warehouse_reads_running_and_is_trusted(setup: MakeSetup) -> None:
    s = await setup()
    tracker = s.tracker()

    status = await tracker.status()

    assert status == WarehouseStatus("RUNNING", 0.0, None)
    assert not tracker.doubted


async def test_the_state_is_read_once_for_many_and_remembered_a_few_seconds(
    setup: MakeSetup,
) -> None:
    s = await setup()
    tracker = s.tracker(cache_s=5)

    await asyncio.gather(*(tracker.status() for _ in range(20)))
    s.clock.now += 4
    await tracker.status()
    reads_within = s.calls("warehouse_get")
    s.clock.now += 1
    await tracker.status()

    assert reads_within == 1
    assert s.calls("warehouse_get") == 2


async def test_doubt_makes_the_next_look_read_again(setup: MakeSetup) -> None:
    s = await setup()
    tracker = s.tracker(cache_s=60)
    await tracker.status()

    tracker.doubt()
    await tracker.status()

    assert s.calls("warehouse_get") == 2


async def test_a_stopped_warehouse_is_started_once_however_many_ask(setup: MakeSetup) -> None:
    s = await setup(start_stopped=True, start_s=60)
    tracker = s.tracker()

    async def ask() -> WarehouseStatus:
        return await tracker.ensure_started(await tracker.status())

    statuses = await asyncio.gather(*(ask() for _ in range(20)))

    assert s.calls("warehouse_start") == 1
    assert s.warehouse.power.starts == 1
    assert tracker.starts_issued == 1
    assert {st.state for st in statuses} == {"STARTING"}
    assert s.warehouse.state == "STARTING"


async def test_two_replicas_on_one_redis_start_it_once(
    setup: MakeSetup, redis_server: RedisServer
) -> None:
    s = await setup(start_stopped=True, start_s=60)
    states = [
        RedisState(redis_server.url, LocalState(MemoryStore(1_000_000, 100_000)), timeout_s=2)
        for _ in range(2)
    ]
    trackers = [s.tracker(state) for state in states]
    try:
        for tracker in trackers:
            await tracker.ensure_started(await tracker.status())
    finally:
        for state in states:
            await state.close()

    assert s.calls("warehouse_start") == 1


async def test_without_auto_start_a_stopped_warehouse_stays_stopped(setup: MakeSetup) -> None:
    s = await setup(start_stopped=True)
    tracker = s.tracker(auto_start=False)

    status = await tracker.ensure_started(await tracker.status())

    assert status == WarehouseStatus("STOPPED", None, None)
    assert s.calls("warehouse_start") == 0


async def test_a_starting_warehouse_is_never_started_again(setup: MakeSetup) -> None:
    s = await setup(start_stopped=True, start_s=60)
    s.warehouse.power.start()  # started by someone else
    tracker = s.tracker()

    status = await tracker.ensure_started(await tracker.status())

    assert status.state == "STARTING"
    assert s.calls("warehouse_start") == 0


async def test_a_stopping_warehouse_is_started_only_once_stopped(setup: MakeSetup) -> None:
    s = await setup(stop_s=10, start_s=60)
    s.warehouse.power.stop()
    tracker = s.tracker(cache_s=1)

    while_stopping = await tracker.ensure_started(await tracker.status())
    s.clock.now += 10
    once_stopped = await tracker.ensure_started(await tracker.status())

    assert while_stopping.state == "STOPPING"
    assert once_stopped.state == "STARTING"
    assert s.calls("warehouse_start") == 1


async def test_a_refused_start_is_met_by_reading_the_state_again(setup: MakeSetup) -> None:
    s = await setup(start_stopped=True)
    s.warehouse.faults.add("warehouse_start", Fault.status(400, error_code="INVALID_STATE"))
    tracker = s.tracker()

    status = await tracker.ensure_started(await tracker.status())

    assert status.state == "STOPPED"
    assert tracker.doubted


async def test_the_eta_is_the_estimate_until_a_start_was_seen(setup: MakeSetup) -> None:
    s = await setup(start_stopped=True, start_s=30)
    tracker = s.tracker(estimate_s=120, cache_s=1)

    before = await tracker.status()
    finished = await tracker.wait_running(300)
    s.warehouse.power.stop(at_once=True)
    tracker.doubt()
    after = await tracker.status()

    assert before.eta_s == 120
    assert finished.running
    assert 30 <= await tracker.expected_start_s() <= 31
    assert after.state == "STOPPED"
    assert after.eta_s is not None
    assert 30 <= after.eta_s <= 31


async def test_replicas_share_what_they_learnt_of_start_times(
    setup: MakeSetup, redis_server: RedisServer
) -> None:
    s = await setup(start_stopped=True, start_s=40)
    states = [
        RedisState(redis_server.url, LocalState(MemoryStore(1_000_000, 100_000)), timeout_s=2)
        for _ in range(2)
    ]
    try:
        starter = s.tracker(states[0], cache_s=1)
        await starter.wait_running(300)
        other = s.tracker(states[1])
        learnt = await other.expected_start_s()
    finally:
        for state in states:
            await state.close()

    assert 40 <= learnt <= 41


async def test_while_starting_the_eta_counts_down(setup: MakeSetup) -> None:
    s = await setup(start_stopped=True, start_s=100)
    tracker = s.tracker(estimate_s=100, cache_s=1)
    await tracker.ensure_started(await tracker.status())

    s.clock.now += 30
    status = await tracker.status()

    assert status.state == "STARTING"
    assert status.starting_for_s == 30
    assert status.eta_s == 70
    assert status.to_json() == {"state": "STARTING", "eta_s": 70, "starting_for_s": 30}


async def test_wait_running_gives_up_at_its_timeout(setup: MakeSetup) -> None:
    s = await setup(start_stopped=True, start_s=100)
    tracker = s.tracker(cache_s=1)

    status = await tracker.wait_running(10)

    assert status.state == "STARTING"
    assert s.calls("warehouse_start") == 1
