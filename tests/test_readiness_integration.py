"""`/ready` over loopback HTTP: it answers at once from a background check, whatever the local
warehouse does (answers, hangs, or is not there), with the last result and its age."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.keys import READINESS
from dbx_backend.localwarehouse import Fault, LocalWarehouse, WarehouseConfig
from dbx_backend.readiness import READY_WAIT_S, Readiness
from dbx_backend.warehouse.retry import NO_WAIT

TOKEN = "dapi-local-ready"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
# A hanging warehouse answers after this long (longer would only hold up the test's teardown,
# which waits for the abandoned submit's answer to cancel its statement).
HANG_S = 6.0
# A bound on any /ready answer that proves it did not wait for the hanging warehouse; not a
# speed measurement.
ANSWER_BOUND_S = READY_WAIT_S + 2.5


@pytest.fixture
async def warehouse() -> AsyncIterator[LocalWarehouse]:
    config = WarehouseConfig(token=TOKEN, seed_samples=False, wait_timeout_scale=0.01)
    async with LocalWarehouse(config) as running:
        yield running


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
    assert executes(warehouse) == 1


async def test_ready_answers_at_once_while_the_warehouse_hangs_then_recovers(
    warehouse: LocalWarehouse, aiohttp_client: MakeClient
) -> None:
    warehouse.faults.add("execute", Fault.delay(HANG_S), times=None)
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
    for _ in range(40):  # bounded: the next check after 0.2 s finds it answering
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
