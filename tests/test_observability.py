"""Metrics, readiness and the log line: they move with traffic and never carry secrets."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aioresponses import aioresponses
from yarl import URL

from dbx_backend.config import Settings
from dbx_backend.logs import JsonFormatter
from tests.conftest import TEST_HOST, TEST_TOKEN, StartService

STATEMENTS = f"{TEST_HOST}/api/2.0/sql/statements"
WAREHOUSE = f"{TEST_HOST}/api/2.0/sql/warehouses/wh123"
RUNNING = {"id": "wh123", "state": "RUNNING"}
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
ONE_ROW = {
    "statement_id": "s-obs",
    "status": {"state": "SUCCEEDED"},
    "manifest": {
        "schema": {"columns": [{"name": "n", "type_name": "INT", "type_text": "INT"}]},
        "total_row_count": 1,
    },
    "result": {"data_array": [["1"]]},
}


@pytest.fixture
async def client(settings: Settings, start_service: StartService) -> Client:
    return await start_service(settings)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (
            line.startswith(name + "{") and line.split(" ")[0] == name
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_counters_move_with_requests(client: Client, mocked: aioresponses) -> None:
    mocked.post(STATEMENTS, status=503)
    mocked.post(STATEMENTS, payload=ONE_ROW)

    await client.post("/api/query", json={"sql": "SELECT 1"})
    text = await (await client.get("/metrics")).text()

    assert (
        metric(text, 'dbx_http_requests_total{method="POST",route="/api/query",status="200"}') == 1
    )
    assert metric(text, 'dbx_statements_total{state="SUCCEEDED"}') == 1
    assert metric(text, 'dbx_warehouse_calls_total{endpoint="execute",outcome="503"}') == 1
    assert metric(text, 'dbx_warehouse_retries_total{endpoint="execute"}') == 1
    assert metric(text, "dbx_rows_returned_total") == 1
    assert metric(text, "dbx_queries_in_flight") == 0


async def test_ready_reads_the_warehouse_state_and_sends_no_statement(
    client: Client, mocked: aioresponses
) -> None:
    mocked.get(WAREHOUSE, payload=RUNNING, repeat=True)

    first = await client.get("/ready")
    second = await client.get("/ready")

    assert first.status == 200
    assert second.status == 200
    assert (await first.json())["warehouse"] == {"state": "RUNNING", "eta_s": 0}
    assert len(mocked.requests[("GET", URL(WAREHOUSE))]) == 1
    assert ("POST", URL(STATEMENTS)) not in mocked.requests


async def test_ready_falls_back_to_a_statement_when_the_state_is_not_ours_to_read(
    client: Client, mocked: aioresponses
) -> None:
    mocked.get(WAREHOUSE, status=403, payload={"error_code": "PERMISSION_DENIED"}, repeat=True)
    mocked.post(STATEMENTS, payload=ONE_ROW)

    response = await client.get("/ready")

    assert response.status == 200
    assert (await response.json())["warehouse"]["state"] == "UNKNOWN"
    assert len(mocked.requests[("POST", URL(STATEMENTS))]) == 1


async def test_not_ready_when_the_warehouse_is_down(client: Client, mocked: aioresponses) -> None:
    mocked.get(WAREHOUSE, status=503, repeat=True)

    response = await client.get("/ready")

    assert response.status == 503
    body = await response.json()
    assert body["error"]["code"] == "NOT_READY"
    assert "ServerError" in body["error"]["message"]
    assert ("POST", URL(STATEMENTS)) not in mocked.requests


async def test_one_json_log_line_per_request_without_sql_values_or_token(
    client: Client, mocked: aioresponses
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("dbx_backend")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    mocked.post(STATEMENTS, payload=ONE_ROW)
    try:
        await client.post(
            "/api/query",
            json={"sql": "SELECT secret_col WHERE x = :v", "params": {"v": "param-value-42"}},
            headers={"X-Request-ID": "req-log-1"},
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "dbx_backend.access"]
    assert len(access) == 1
    entry = access[0]
    assert entry["request_id"] == "req-log-1"
    assert entry["route"] == "/api/query"
    assert entry["status"] == 200
    assert entry["statement_id"] == "s-obs"
    assert entry["rows"] == 1
    assert entry["retries"] == 0
    text = stream.getvalue()
    for secret in ("secret_col", "param-value-42", TEST_TOKEN):
        assert secret not in text


async def test_concurrent_readiness_checks_share_one_look(
    client: Client, mocked: aioresponses
) -> None:
    mocked.get(WAREHOUSE, payload=RUNNING, repeat=True)

    responses = await asyncio.gather(*(client.get("/ready") for _ in range(20)))

    assert [r.status for r in responses] == [200] * 20
    assert len(mocked.requests[("GET", URL(WAREHOUSE))]) == 1
