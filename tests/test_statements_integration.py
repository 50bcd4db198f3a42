"""The statements API end to end against the local warehouse over loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.api.statements import setup_statement_routes
from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.localwarehouse import LocalWarehouse
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import StartLocalWarehouse

TOKEN = "dapi-local-statements"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
ROWS = 1000  # the row count of the statements below


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    return await local_warehouse(token=TOKEN, chunk_rows=128, wait_timeout_scale=0.01)


@pytest.fixture
async def service(warehouse: LocalWarehouse, aiohttp_client: MakeClient) -> Client:
    settings = load_settings(
        {
            "DATABRICKS_HOST": warehouse.url,
            "DATABRICKS_HTTP_PATH": warehouse.http_path,
            "DATABRICKS_TOKEN": TOKEN,
            "STATEMENT_HANDLE_SECRET": "integration-secret-0123456789abcdef",
        },
        env_file=None,
    )
    app = create_app(settings, retry_policy=NO_WAIT, poll_schedule=PollSchedule(0.01, 1, 0.01))
    if "submit_statement" not in app.router.named_resources():
        setup_statement_routes(app, settings)
    return await aiohttp_client(app)


async def call(service: Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = await service.request(method, path, **kwargs)
    body: dict[str, Any] = await response.json()
    assert response.status < 300, body
    return body


async def wait_for_state(service: Client, handle: str, states: set[str]) -> dict[str, Any]:
    """Poll the service until the statement is in one of `states` (bounded: 3 s)."""
    body: dict[str, Any] = {}
    for _ in range(600):
        body = await call(service, "GET", f"/api/statements/{handle}?limit=0")
        if body["state"] in states:
            return body
        await asyncio.sleep(0.005)
    raise AssertionError(f"the statement never reached {states}: {body}")


@pytest.mark.parametrize("disposition", ["INLINE", "EXTERNAL_LINKS"])
async def test_submit_poll_and_page_through_a_multi_chunk_result(
    service: Client, disposition: str
) -> None:
    sql = "SELECT id, id * 2 AS twice FROM range(1000) AS t(id) ORDER BY id"
    submitted = await call(
        service, "POST", "/api/statements", json={"sql": sql, "disposition": disposition}
    )
    handle = submitted["statement_id"]

    done = await wait_for_state(service, handle, {"SUCCEEDED", "FAILED", "CANCELED"})
    rows: list[list[Any]] = []
    offset: int | None = 0
    for _ in range(10):  # bounded: 1000 rows, 300 per page
        if offset is None:
            break
        page = await call(
            service, "GET", f"/api/statements/{handle}/rows?offset={offset}&limit=300"
        )
        rows += page["rows"]
        offset = page["next_offset"]

    assert submitted["state"] in ("PENDING", "RUNNING", "SUCCEEDED")
    assert (done["state"], done["row_count"], done["truncated"]) == ("SUCCEEDED", ROWS, False)
    assert [c["name"] for c in done["columns"]] == ["id", "twice"]
    assert rows == [[i, i * 2] for i in range(ROWS)]


async def test_a_page_in_the_middle_matches_the_rows_at_that_offset(service: Client) -> None:
    sql = "SELECT id FROM range(1000) AS t(id) ORDER BY id"
    handle = (await call(service, "POST", "/api/statements", json={"sql": sql}))["statement_id"]
    await wait_for_state(service, handle, {"SUCCEEDED"})

    page = await call(service, "GET", f"/api/statements/{handle}/rows?offset=250&limit=20")

    assert page["rows"] == [[i] for i in range(250, 270)]
    assert (page["total_row_count"], page["next_offset"]) == (ROWS, 270)


async def test_cancel_stops_a_running_statement(service: Client, warehouse: LocalWarehouse) -> None:
    body = {"sql": "SELECT sleep_ms(20000) AS slept"}
    handle = (await call(service, "POST", "/api/statements", json=body))["statement_id"]
    await wait_for_state(service, handle, {"RUNNING"})

    response = await service.delete(f"/api/statements/{handle}")
    ended = await wait_for_state(service, handle, {"CANCELED", "SUCCEEDED", "FAILED"})

    assert response.status == 202
    assert ended["state"] == "CANCELED"
    assert warehouse.active_statements() == 0


async def test_a_poller_tells_a_failed_statement_from_a_bad_poll(service: Client) -> None:
    body = {"sql": "SELECT * FROM no_such_table_anywhere"}
    handle = (await call(service, "POST", "/api/statements", json=body))["statement_id"]

    failed = await wait_for_state(service, handle, {"FAILED", "SUCCEEDED"})
    rows = await service.get(f"/api/statements/{handle}/rows")
    bad_poll = await service.get(f"/api/statements/{handle}?limit=-1")

    assert failed["state"] == "FAILED"
    assert failed["error"]["code"] == "SQL_ERROR"
    assert "no_such_table_anywhere" in failed["error"]["message"]
    assert rows.status == 409
    assert (await rows.json())["error"]["state"] == "FAILED"
    assert bad_poll.status == 400


async def test_a_running_statement_reports_elapsed_time_and_no_rows_yet(service: Client) -> None:
    body = {"sql": "SELECT sleep_ms(3000) AS slept"}
    handle = (await call(service, "POST", "/api/statements", json=body))["statement_id"]

    running = await wait_for_state(service, handle, {"RUNNING"})
    await asyncio.sleep(0.05)
    later = await call(service, "GET", f"/api/statements/{handle}")
    rows = await service.get(f"/api/statements/{handle}/rows")
    await service.delete(f"/api/statements/{handle}")

    assert 0 <= running["elapsed_ms"] < later["elapsed_ms"]
    assert (rows.status, (await rows.json())["error"]["code"]) == (409, "STATEMENT_NOT_READY")


async def test_wait_s_answers_a_quick_statement_already_succeeded(service: Client) -> None:
    body = {"sql": "SELECT 42 AS answer", "wait_s": 5}

    submitted = await call(service, "POST", "/api/statements", json=body)
    status = await call(service, "GET", f"/api/statements/{submitted['statement_id']}")

    assert submitted["state"] == "SUCCEEDED"
    assert status["rows"] == [[42]]


async def test_a_caller_that_leaves_during_wait_s_cancels_the_statement(
    service: Client, warehouse: LocalWarehouse
) -> None:
    body = {"sql": "SELECT sleep_ms(20000) AS slept", "wait_s": 3}
    task = asyncio.create_task(service.post("/api/statements", json=body))
    for _ in range(300):  # bounded: 3 s for the statement to start
        if warehouse.active_statements() == 1:
            break
        await asyncio.sleep(0.01)

    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    for _ in range(300):  # bounded: 3 s for the cancel to reach the warehouse
        if warehouse.active_statements() == 0:
            break
        await asyncio.sleep(0.01)
    assert warehouse.active_statements() == 0
    assert any(r.path.endswith("/cancel") for r in warehouse.requests)
