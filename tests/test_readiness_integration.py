"""`/ready` over loopback HTTP: it answers at once from a background check, whatever the local
warehouse does (answers, hangs, or is not there), with the last result and its age; the check
reads the warehouse's state and sends it no statement, so it can still stop when idle."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.keys import READINESS, WAREHOUSE_TRACKER
from dbx_backend.localwarehouse import Fault, LocalWarehouse
from dbx_backend.readiness import READY_WAIT_S, Readiness
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import WALL_CLOCK_START, FakeClock, StartLocalWarehouse

TOKEN = "dapi-local-ready"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
# A hanging warehouse answers after this long; the check gives up after 1 s, and the next look
# waits for the read in flight (shared with requests), so longer only makes the test slower.
HANG_S = 2.5
# A bound on any /ready answer that proves it did not wait for the hanging warehouse; not a
# speed measurement.
ANSWER_BOUND_S = READY_WAIT_S + 2.5
# Idle seconds before the local warehouse stops, on a fake clock.
AUTO_STOP_S = 60.0


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    return await local_warehouse(token=TOKEN, wait_timeout_scale=0.01)


def make_app(url: str, http_path: str, readiness: Readiness) -> web.Application:
    settings = load_settings(
        {"DATABRICKS_HOST": url, "DATABRICKS_HTTP_PATH": http_path, "DATABRICKS_TOKEN": TOKEN},
        env_file=None,
    )
    poll = PollSchedule(0.01, 1, 0.01)
    app = create_app(settings, retry_policy=NO_WAIT, poll_schedule=poll)
    app[READINESS] = readiness
    return app


async def get_ready(client: Client) -> tuple[int, dict[str, Any], str | None]:
    async with asyncio.timeout(ANSWER_BOUND_S):
        response = await client.get("/ready")
        body: dict[str, Any] = await response.json()
    return response.status, body, response.headers.get("Retry-After")


def executes(warehouse: LocalWarehouse) -> int:
    return sum(1 for r in warehouse.requests if r.endpoint == "execute")


def state_reads(warehouse: LocalWarehouse) -> int:
    return sum(1 for r in warehouse.requests if r.endpoint == "warehouse_get")


async def test_ready_reports_the_last_check_and_its_age(
    warehouse: LocalWarehouse, aiohttp_client: MakeClient
) -> None:
    app = make_app(warehouse.url, warehouse.http_path, Readiness())
    client = await aiohttp_client(app)

    first_status, first, _ = await get_ready(client)
    second_status, second, _ = await get_ready(client)

    assert (first_status, second_status) == (200, 200)
    assert first["status"] == second["status"] == "ready"
    assert second["checked_at"] == first["checked_at"]  # remembered, not checked again
    assert datetime.fromisoformat(first["checked_at"]).tzinfo is not None
    assert 0 <= first["age_s"] <= second["age_s"]
    assert first["warehouse"] == {"state": "RUNNING", "eta_s": 0}
    assert state_reads(warehouse) == 1
    assert executes(warehouse) == 0


async def test_ready_answers_at_once_while_the_warehouse_hangs_then_recovers(
    warehouse: LocalWarehouse, aiohttp_client: MakeClient
) -> None:
    warehouse.faults.add("warehouse_get", Fault.delay(HANG_S), times=None)
    readiness = Readiness(timeout_s=1.0, cache_s=0.2)
    client = await aiohttp_client(make_app(warehouse.url, warehouse.http_path, readiness))

    status, body, retry_after = await get_ready(client)
    assert status == 503
    assert (body["status"], body["checked_at"], body["age_s"]) == ("not_ready", None, None)
    assert body["error"]["code"] == "NOT_READY"
    assert body["error"]["retryable"] is True
    assert retry_after is not None

    for _ in range(40):  # bounded: the hanging check gives up after 1 s
        status, body, _ = await get_ready(client)
        if body["checked_at"] is not None:
            break
        await asyncio.sleep(0.1)
    assert (status, body["status"]) == (503, "not_ready")
    assert body["age_s"] >= 0
    assert "TimeoutError" in body["error"]["message"]

    warehouse.faults.clear()
    for _ in range(60):  # bounded: once the hung read ends, the next check finds it answering
        status, body, _ = await get_ready(client)
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert (status, body["status"]) == (200, "ready")


async def test_ready_answers_when_nothing_listens_at_the_warehouse_address(
    aiohttp_client: MakeClient,
) -> None:
    with socket.socket() as probe:  # a loopback port that refuses connections once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_app(f"http://127.0.0.1:{port}", "/sql/1.0/warehouses/gone", Readiness())
    client = await aiohttp_client(app)

    status, body, _ = await get_ready(client)

    assert status == 503
    assert body["status"] == "not_ready"
    assert body["error"]["code"] == "NOT_READY"
    assert "ConnectFailed" in body["error"]["message"]


async def test_polling_ready_never_keeps_an_idle_warehouse_from_stopping(
    aiohttp_client: MakeClient, local_warehouse: StartLocalWarehouse
) -> None:
    # The warehouse's idle clock and the service's memory of its state follow a fake clock
    # that only this test moves: however slowly a loaded machine answers, the warehouse
    # cannot stop before the first poll, and each poll reads its state afresh.
    clock = FakeClock(WALL_CLOCK_START)
    warehouse = await local_warehouse(
        clock=clock, token=TOKEN, auto_stop_s=AUTO_STOP_S, wait_timeout_scale=1.0
    )
    app = make_app(warehouse.url, warehouse.http_path, Readiness(cache_s=0.0))
    client = await aiohttp_client(app)
    tracker = app[WAREHOUSE_TRACKER]
    tracker.clock = clock

    seen = [(await get_ready(client))[:2]]
    for _ in range(40):  # bounded: the warehouse stops AUTO_STOP_S after it went idle
        if seen[-1][1]["warehouse"]["state"] == "STOPPED":
            break
        clock.advance(tracker.cache_s)  # a poll every few seconds, each one a fresh read
        seen.append((await get_ready(client))[:2])
    polled_s = clock() - WALL_CLOCK_START

    states = [(status, body["warehouse"]["state"]) for status, body in seen]
    assert states[0] == (200, "RUNNING")
    assert states[-1] == (200, "STOPPED")  # STOPPED is ready: the next statement starts it
    assert {state for _, state in states} <= {"RUNNING", "STOPPED"}
    assert polled_s >= AUTO_STOP_S  # it stopped when idle for that long, not before
    assert warehouse.state == "STOPPED"
    assert executes(warehouse) == 0


async def test_ready_runs_a_statement_only_when_the_warehouses_api_refuses_us(
    warehouse: LocalWarehouse, aiohttp_client: MakeClient
) -> None:
    warehouse.faults.add("warehouse_get", Fault.status(403), times=None)
    client = await aiohttp_client(make_app(warehouse.url, warehouse.http_path, Readiness()))

    for _ in range(40):  # bounded: until the first check (a look, then a statement) ended
        status, body, _ = await get_ready(client)
        if body["checked_at"] is not None:
            break
        await asyncio.sleep(0.1)

    assert (status, body["status"]) == (200, "ready")
    assert body["warehouse"]["state"] == "UNKNOWN"
    assert executes(warehouse) == 1


class _HangingService:
    """Stands in for the query service: its statement never ends until it is cancelled."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0

    async def execute_query(self, sql: str, **kwargs: Any) -> None:
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_one_check_runs_at_a_time_and_close_cancels_it() -> None:
    service = _HangingService()
    readiness = Readiness(timeout_s=60, wait_s=0.01)

    reports = await asyncio.gather(*(readiness.report(service) for _ in range(5)))  # type: ignore[arg-type]
    await readiness.close()

    assert [r.ready for r in reports] == [False] * 5
    assert (service.started, service.cancelled) == (1, 1)
