"""Streaming against the local warehouse: bounded memory with a slow reader, faults, disconnects.

By the time rows stream, the statement has SUCCEEDED on the warehouse (results exist only then),
so a client leaving mid-stream cannot make it CANCELED: what must stop is our reading of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from dbx_backend.localwarehouse import Fault, LocalWarehouse
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import StartLocalWarehouse

TOKEN = "dapi-stream-0123456789abcdef"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
# 200 chunks of 500 rows of ~2 KB: about 200 MB if it were all buffered.
WIDE_SQL = "SELECT id, repeat('x', 2000) AS pad FROM range(100000) t(id)"
CHUNKS = 200


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    return await local_warehouse(
        token=TOKEN, chunk_rows=500, chunk_bytes=64 * 1024 * 1024, wait_timeout_scale=0.02
    )


@pytest.fixture
def app(warehouse: LocalWarehouse) -> web.Application:
    settings = load_settings(
        {
            "DATABRICKS_HOST": warehouse.url,
            "DATABRICKS_HTTP_PATH": warehouse.http_path,
            "DATABRICKS_TOKEN": TOKEN,
            "DOWNLOAD_WINDOW": "2",
        },
        env_file=None,
    )
    return create_app(settings, retry_policy=NO_WAIT)


def downloads(warehouse: LocalWarehouse) -> int:
    return sum(1 for r in warehouse.requests if r.endpoint == "download")


async def test_a_slow_reader_holds_the_service_to_a_few_chunks(
    app: web.Application, warehouse: LocalWarehouse
) -> None:
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        response = await session.post(
            server.make_url("/api/query"),
            json={"sql": WIDE_SQL},
            headers={"Accept": "application/x-ndjson"},
        )
        first = await response.content.readline()
        await asyncio.sleep(0.5)  # the reader stalls: nothing more is read meanwhile
        fetched_while_stalled = downloads(warehouse)
        rows = 0
        async for line in response.content:
            rows += line.startswith(b"[")

    assert orjson.loads(first)["columns"][0]["name"] == "id"
    assert fetched_while_stalled < CHUNKS // 4
    assert rows == 100000
    assert downloads(warehouse) == CHUNKS


async def test_a_client_leaving_mid_stream_stops_the_downloads(
    app: web.Application, warehouse: LocalWarehouse
) -> None:
    async with TestServer(app) as server:
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                server.make_url("/api/query"),
                json={"sql": WIDE_SQL},
                headers={"Accept": "application/x-ndjson"},
            )
            await response.content.readline()
            response.close()  # the client goes away mid-stream
        await asyncio.sleep(0.3)
        after_leaving = downloads(warehouse)
        await asyncio.sleep(0.3)

    assert after_leaving < CHUNKS
    assert downloads(warehouse) == after_leaving


async def test_a_fault_mid_stream_ends_ndjson_with_an_error_line(
    app: web.Application, warehouse: LocalWarehouse, aiohttp_client: MakeClient
) -> None:
    client = await aiohttp_client(app)
    warehouse.faults.add("download", Fault.status(403), times=None, after=5)
    warehouse.faults.add("get_chunk", Fault.status(404), times=None, after=5)

    response = await client.post(
        "/api/query", json={"sql": WIDE_SQL}, headers={"Accept": "application/x-ndjson"}
    )
    lines = (await response.read()).splitlines()

    assert response.status == 200
    last = orjson.loads(lines[-1])
    assert last["error"]["code"] in ("WAREHOUSE_ERROR", "WAREHOUSE_UNAVAILABLE")
    assert last["error"]["request_id"]
    assert 1 < len(lines) - 1 < 100000
    assert "row_count" not in last
