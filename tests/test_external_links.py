"""EXTERNAL_LINKS results: concurrent downloads in order, no credential, refresh, retry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
import pyarrow as pa
import pytest
from aioresponses import aioresponses
from yarl import URL

from dbx_backend.config import Settings
from dbx_backend.engine.query_service import QueryOptions, QueryService
from dbx_backend.engine.reader import FIRST_PART_ROWS
from dbx_backend.warehouse.client import WarehouseClient
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import TEST_HOST, TEST_TOKEN, FakeClock

STATEMENTS = f"{TEST_HOST}/api/2.0/sql/statements"
SID = "01f0-ext"
STORE = "https://store.example/results"
COLUMNS = [
    {"name": "id", "position": 0, "type_name": "LONG", "type_text": "BIGINT"},
    {
        "name": "v",
        "position": 1,
        "type_name": "DECIMAL",
        "type_text": "DECIMAL(5,2)",
        "type_precision": 5,
        "type_scale": 2,
    },
]
EXTERNAL = QueryOptions(disposition="EXTERNAL_LINKS", download_window=3)


def link(
    index: int,
    offset: int,
    count: int,
    *,
    expiration: str = "2999-01-01T00:00:00Z",
    version: int = 0,
) -> dict[str, Any]:
    return {
        "chunk_index": index,
        "row_offset": offset,
        "row_count": count,
        "external_link": f"{STORE}/{index}?sig={version}",
        "expiration": expiration,
        "http_headers": {"x-amz-server-side-encryption-customer-key": "k"},
    }


def chunk_rows(index: int, count: int) -> list[list[str]]:
    return [[str(index * 10 + i), f"{index}.{i}0"] for i in range(count)]


def statement(fmt: str, chunks: int, first: dict[str, Any]) -> dict[str, Any]:
    return {
        "statement_id": SID,
        "status": {"state": "SUCCEEDED"},
        "manifest": {
            "format": fmt,
            "schema": {"columns": COLUMNS},
            "total_chunk_count": chunks,
            "total_row_count": 2 * chunks,
        },
        "result": {"external_links": [first]},
    }


@pytest.fixture
async def service(settings: Settings, clock: FakeClock) -> AsyncIterator[QueryService]:
    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        yield QueryService(client, sleep=clock.sleep, clock=clock)


def serve_chunks(mocked: aioresponses, chunks: int) -> None:
    mocked.post(STATEMENTS, payload=statement("JSON_ARRAY", chunks, link(0, 0, 2)))
    for index in range(chunks):
        if index:
            mocked.get(
                f"{STATEMENTS}/{SID}/result/chunks/{index}",
                payload={"external_links": [link(index, 2 * index, 2)]},
            )
        mocked.get(f"{STORE}/{index}?sig=0", body=orjson.dumps(chunk_rows(index, 2)))


async def test_chunks_are_downloaded_and_kept_in_order(
    service: QueryService, mocked: aioresponses
) -> None:
    serve_chunks(mocked, 5)

    result = await service.execute_query("SELECT *", options=EXTERNAL)

    assert [row[0] for row in result.rows] == [0, 1, 10, 11, 20, 21, 30, 31, 40, 41]
    assert result.rows[3] == [11, "1.10"]
    sent = mocked.requests[("POST", URL(STATEMENTS))][0].kwargs["json"]
    assert sent["disposition"] == "EXTERNAL_LINKS"


async def test_downloads_never_carry_our_credential_but_send_the_link_headers(
    service: QueryService, mocked: aioresponses
) -> None:
    serve_chunks(mocked, 2)

    await service.execute_query("SELECT *", options=EXTERNAL)

    downloads = [
        call
        for (method, url), calls in mocked.requests.items()
        if url.host == "store.example"
        for call in calls
    ]
    assert len(downloads) == 2
    for call in downloads:
        headers = call.kwargs["headers"]
        assert "Authorization" not in headers
        assert TEST_TOKEN not in str(call.kwargs)
        assert headers["x-amz-server-side-encryption-customer-key"] == "k"


async def test_an_expired_link_is_refreshed_through_the_chunk_endpoint(
    service: QueryService, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=statement("JSON_ARRAY", 1, link(0, 0, 2)))
    mocked.get(f"{STORE}/0?sig=0", status=403, body="<Error>Request has expired</Error>")
    mocked.get(
        f"{STATEMENTS}/{SID}/result/chunks/0",
        payload={"external_links": [link(0, 0, 2, version=1)]},
    )
    mocked.get(f"{STORE}/0?sig=1", body=orjson.dumps(chunk_rows(0, 2)))

    result = await service.execute_query("SELECT *", options=EXTERNAL)

    assert result.row_count == 2


async def test_a_link_about_to_expire_is_refreshed_before_use(
    service: QueryService, mocked: aioresponses
) -> None:
    mocked.post(
        STATEMENTS,
        payload=statement("JSON_ARRAY", 1, link(0, 0, 2, expiration="2000-01-01T00:00:00Z")),
    )
    mocked.get(
        f"{STATEMENTS}/{SID}/result/chunks/0",
        payload={"external_links": [link(0, 0, 2, version=1)]},
    )
    mocked.get(f"{STORE}/0?sig=1", body=orjson.dumps(chunk_rows(0, 2)))

    result = await service.execute_query("SELECT *", options=EXTERNAL)

    assert result.row_count == 2
    assert ("GET", URL(f"{STORE}/0?sig=0")) not in mocked.requests


async def test_a_failed_download_is_retried(service: QueryService, mocked: aioresponses) -> None:
    mocked.post(STATEMENTS, payload=statement("JSON_ARRAY", 1, link(0, 0, 2)))
    mocked.get(f"{STORE}/0?sig=0", status=500)
    mocked.get(f"{STORE}/0?sig=0", body=orjson.dumps(chunk_rows(0, 2)))

    result = await service.execute_query("SELECT *", options=EXTERNAL)

    assert result.row_count == 2
    assert len(mocked.requests[("GET", URL(f"{STORE}/0?sig=0"))]) == 2


async def test_arrow_chunks_normalize_like_json_array(
    service: QueryService, mocked: aioresponses
) -> None:
    table = pa.table(
        {
            "id": pa.array([0, 1], pa.int64()),
            "v": pa.array(["0.00", "0.10"]).cast(pa.decimal128(5, 2)),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    mocked.post(STATEMENTS, payload=statement("ARROW_STREAM", 1, link(0, 0, 2)))
    mocked.get(f"{STORE}/0?sig=0", body=sink.getvalue().to_pybytes())
    arrow = QueryOptions(disposition="EXTERNAL_LINKS", result_format="ARROW_STREAM")

    result = await service.execute_query("SELECT *", options=arrow)

    assert result.rows == [[0, "0.00"], [1, "0.10"]]


def arrow_chunk(ids: range) -> bytes:
    table = pa.table(
        {
            "id": pa.array(list(ids), pa.int64()),
            "v": pa.array(["1.00"] * len(ids)).cast(pa.decimal128(5, 2)),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=600)  # several record batches
    return bytes(sink.getvalue().to_pybytes())


@pytest.mark.parametrize(
    ("fmt", "sizes"),
    [
        pytest.param("ARROW_STREAM", [FIRST_PART_ROWS, 500, 2], id="arrow-in-two-parts"),
        pytest.param("JSON_ARRAY", [FIRST_PART_ROWS + 500, 2], id="json-array-whole"),
    ],
)
async def test_a_results_first_arrow_rows_are_handed_on_before_the_rest_of_its_first_chunk(
    service: QueryService,
    mocked: aioresponses,
    fmt: Literal["JSON_ARRAY", "ARROW_STREAM"],
    sizes: list[int],
) -> None:
    first_rows = FIRST_PART_ROWS + 500
    answer = statement(fmt, 2, link(0, 0, first_rows))
    answer["manifest"]["total_row_count"] = first_rows + 2
    mocked.post(STATEMENTS, payload=answer)
    mocked.get(
        f"{STATEMENTS}/{SID}/result/chunks/1",
        payload={"external_links": [link(1, first_rows, 2)]},
    )
    if fmt == "ARROW_STREAM":
        first, second = arrow_chunk(range(first_rows)), arrow_chunk(range(10, 12))
    else:
        first = orjson.dumps([[str(i), "1.00"] for i in range(first_rows)])
        second = orjson.dumps(chunk_rows(1, 2))
    mocked.get(f"{STORE}/0?sig=0", body=first)
    mocked.get(f"{STORE}/1?sig=0", body=second)
    options = QueryOptions(disposition="EXTERNAL_LINKS", result_format=fmt)

    opened = service.open("SELECT *", options=options)
    async with opened:
        parts = [part async for part in opened.parts(opened.json_rows())]

    assert [len(part) for part in parts] == sizes
    assert [row[0] for part in parts for row in part] == [*range(first_rows), 10, 11]


async def test_a_stream_closed_after_its_first_rows_stops_the_downloads_of_the_window(
    service: QueryService, mocked: aioresponses
) -> None:
    import asyncio

    first_rows = FIRST_PART_ROWS + 500
    answer = statement("ARROW_STREAM", 3, link(0, 0, first_rows))
    answer["manifest"]["total_row_count"] = first_rows + 4
    mocked.post(STATEMENTS, payload=answer)
    started, stopped = asyncio.Event(), asyncio.Event()

    async def hang(url: URL, **kwargs: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # a download that never ends by itself
        finally:
            stopped.set()

    for index in (1, 2):
        mocked.get(
            f"{STATEMENTS}/{SID}/result/chunks/{index}",
            payload={"external_links": [link(index, first_rows + 2 * (index - 1), 2)]},
        )
        mocked.get(f"{STORE}/{index}?sig=0", callback=hang)
    mocked.get(f"{STORE}/0?sig=0", body=arrow_chunk(range(first_rows)))
    options = QueryOptions(disposition="EXTERNAL_LINKS", result_format="ARROW_STREAM")

    async with asyncio.timeout(30):
        opened = service.open("SELECT *", options=options)
        async with opened:
            parts = opened.parts(opened.json_rows())
            head = await anext(parts)
            await started.wait()  # the window is downloading while the first rows are read
            await parts.aclose()  # the client went away
            closed_at_once = stopped.is_set()

    assert [row[0] for row in head] == list(range(FIRST_PART_ROWS))
    assert closed_at_once
    assert service.memory.reserved == 0
