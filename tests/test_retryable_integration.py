"""`retryable` against the local warehouse over loopback: true only when sending the same
request again cannot run a statement twice, and the error names the statement when known."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.localwarehouse import Fault, LocalWarehouse
from tests.conftest import StartLocalWarehouse, StartService, warehouse_settings

TOKEN = "dapi-local-retryable"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
MakeService = Callable[[bool], Awaitable[Client]]
# Still RUNNING when the submit's shrunk wait ends, so the service polls it.
SLOW_SQL = "SELECT sleep_ms(400) AS slept"
# 40 chunks of 500 rows: a stream that can fail after its first rows.
LONG_SQL = "SELECT id FROM range(20000) AS t(id)"


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    return await local_warehouse(token=TOKEN, chunk_rows=500, wait_timeout_scale=0.01)


@pytest.fixture
def service(warehouse: LocalWarehouse, start_service: StartService) -> MakeService:
    async def make(read_only: bool) -> Client:
        settings = warehouse_settings(warehouse, READ_ONLY=str(read_only).lower())
        return await start_service(settings, poll_schedule=PollSchedule(0.01, 1, 0.01))

    return make


def executes(warehouse: LocalWarehouse) -> int:
    return sum(1 for r in warehouse.requests if r.endpoint == "execute")


async def post(client: Client, path: str, sql: str) -> tuple[int, dict[str, Any]]:
    response = await client.post(path, json={"sql": sql})
    body: dict[str, Any] = await response.json()
    return response.status, body


MODES = [pytest.param(True, id="read-only"), pytest.param(False, id="writes-allowed")]


@pytest.mark.parametrize("read_only", MODES)
async def test_a_failure_while_polling_a_submitted_statement_is_retryable_only_when_read_only(
    service: MakeService, warehouse: LocalWarehouse, read_only: bool
) -> None:
    client = await service(read_only)
    warehouse.faults.add("get_statement", Fault.status(503), times=None)

    status, body = await post(client, "/api/query", SLOW_SQL)

    assert status == 503
    assert body["error"]["code"] == "WAREHOUSE_UNAVAILABLE"
    assert body["error"]["retryable"] is read_only
    assert body["error"]["statement_id"]
    assert executes(warehouse) == 1


@pytest.mark.parametrize("read_only", MODES)
@pytest.mark.parametrize("path", ["/api/query", "/api/statements"])
async def test_a_submit_whose_answer_was_lost_is_retryable_only_when_read_only(
    service: MakeService, warehouse: LocalWarehouse, read_only: bool, path: str
) -> None:
    client = await service(read_only)
    warehouse.faults.add("execute", Fault.drop(after_handler=True))

    status, body = await post(client, path, SLOW_SQL)

    assert status == 503
    assert body["error"]["code"] == "WAREHOUSE_UNAVAILABLE"
    assert body["error"]["retryable"] is read_only
    assert executes(warehouse) == 1  # the service itself never sends a submit twice


@pytest.mark.parametrize("read_only", MODES)
@pytest.mark.parametrize("path", ["/api/query", "/api/statements"])
async def test_a_submit_the_warehouse_refused_with_503_stays_retryable(
    service: MakeService, warehouse: LocalWarehouse, read_only: bool, path: str
) -> None:
    client = await service(read_only)
    warehouse.faults.add("execute", Fault.status(503, retry_after=2), times=None)

    response = await client.post(path, json={"sql": SLOW_SQL})
    body = await response.json()

    assert response.status == 503
    assert body["error"]["retryable"] is True
    assert "statement_id" not in body["error"]
    assert response.headers["Retry-After"] == "2"
    assert warehouse.active_statements() == 0


async def test_a_non_retryable_answer_has_no_retry_after(
    service: MakeService, warehouse: LocalWarehouse
) -> None:
    client = await service(False)
    warehouse.faults.add("get_statement", Fault.status(503, retry_after=2), times=None)

    response = await client.post("/api/query", json={"sql": SLOW_SQL})
    body = await response.json()

    assert (response.status, body["error"]["retryable"]) == (503, False)
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize("read_only", MODES)
async def test_an_ndjson_error_line_names_the_statement(
    service: MakeService, warehouse: LocalWarehouse, read_only: bool
) -> None:
    client = await service(read_only)
    warehouse.faults.add("download", Fault.status(503), times=None, after=3)
    warehouse.faults.add("get_chunk", Fault.status(503), times=None, after=3)

    response = await client.post(
        "/api/query", json={"sql": LONG_SQL}, headers={"Accept": "application/x-ndjson"}
    )
    lines = [orjson.loads(line) for line in (await response.read()).splitlines()]

    assert response.status == 200
    first, last = lines[0], lines[-1]
    assert last["error"]["code"] == "WAREHOUSE_UNAVAILABLE"
    assert last["error"]["statement_id"] == first["statement_id"]
    assert last["error"]["retryable"] is read_only
    assert 1 < len(lines) - 1 < 20000
