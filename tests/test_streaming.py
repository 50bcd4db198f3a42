"""Streamed results (NDJSON, CSV) against a mocked warehouse: same rows as JSON, errors in-band."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aioresponses import aioresponses

from dbx_backend.api.streaming import negotiate
from dbx_backend.config import Settings
from tests.conftest import TEST_HOST, StartService

STATEMENTS = f"{TEST_HOST}/api/2.0/sql/statements"
SID = "01f0-stream"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
COLUMNS = [
    {"name": "id", "position": 0, "type_name": "LONG", "type_text": "BIGINT"},
    {"name": "tags", "position": 1, "type_name": "ARRAY", "type_text": "ARRAY<STRING>"},
    {"name": "note", "position": 2, "type_name": "STRING", "type_text": "STRING"},
]
CHUNKS = [
    [["1", '["a","b"]', "plain"], ["2", None, 'has "quotes", and comma']],
    [["3", "[]", ""]],
    [["4", '["x"]', "line\nbreak"]],
]
INLINE = {"sql": "SELECT * FROM t", "disposition": "INLINE"}


def link(index: int) -> str:
    return f"/api/2.0/sql/statements/{SID}/result/chunks/{index}"


def serve(mocked: aioresponses, *, fail_chunk: int | None = None, times: int = 1) -> None:
    offsets = [0, 2, 3]
    for _ in range(times):
        mocked.post(
            STATEMENTS,
            payload={
                "statement_id": SID,
                "status": {"state": "SUCCEEDED"},
                "manifest": {
                    "schema": {"columns": COLUMNS},
                    "total_row_count": 4,
                    "total_chunk_count": 3,
                },
                "result": {
                    "data_array": CHUNKS[0],
                    "next_chunk_index": 1,
                    "next_chunk_internal_link": link(1),
                },
            },
        )
        for index in (1, 2):
            body: dict[str, Any] = {
                "chunk_index": index,
                "row_offset": offsets[index],
                "data_array": CHUNKS[index],
            }
            if index == 1:
                body.update(next_chunk_index=2, next_chunk_internal_link=link(2))
            if index == fail_chunk:
                mocked.get(
                    TEST_HOST + link(index),
                    status=404,
                    payload={"error_code": "NOT_FOUND", "message": "gone"},
                )
            else:
                mocked.get(TEST_HOST + link(index), payload=body)


@pytest.fixture
async def client(settings: Settings, start_service: StartService) -> Client:
    return await start_service(settings)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param("application/x-ndjson", "ndjson", id="ndjson"),
        pytest.param("text/csv;q=0.9", "csv", id="csv"),
        pytest.param("application/vnd.apache.arrow.stream", "arrow", id="arrow"),
        pytest.param("Application/Vnd.Apache.Arrow.Stream; q=1", "arrow", id="arrow-any-case"),
        pytest.param("application/json", "json", id="json"),
        pytest.param("", "json", id="none"),
        pytest.param("text/html,*/*", "json", id="browser"),
    ],
)
def test_accept_chooses_the_format(accept: str, expected: str) -> None:
    assert negotiate(accept) == expected


SERVER_TIMING = r"wait;dur=[0-9.]+, fetch;dur=[0-9.]+, convert;dur=[0-9.]+"


async def test_ndjson_and_csv_carry_the_same_rows_as_json(
    client: Client, mocked: aioresponses
) -> None:
    serve(mocked, times=3)

    buffered = await (await client.post("/api/query", json=INLINE)).json()
    ndjson = await client.post(  # run fresh: a cached answer would not know the chunks
        "/api/query",
        json=INLINE,
        headers={"Accept": "application/x-ndjson", "Cache-Control": "no-cache"},
    )
    csv_response = await client.post("/api/query", json=INLINE, headers={"Accept": "text/csv"})

    lines = [orjson.loads(line) for line in (await ndjson.read()).splitlines()]
    assert ndjson.headers["Content-Type"].startswith("application/x-ndjson")
    assert lines[0] == {
        "columns": buffered["columns"],
        "statement_id": SID,
        "total_row_count": 4,
        "chunk_count": 3,
    }
    assert lines[1:-1] == buffered["rows"]
    footer = lines[-1]
    assert (footer["row_count"], footer["truncated"]) == (4, False)
    assert re.fullmatch(SERVER_TIMING, footer["server_timing"])
    # Headers leave before the rows: the wait, and how the cache came into it.
    assert re.fullmatch(r"wait;dur=[0-9.]+, cache;desc=miss", ndjson.headers["Server-Timing"])
    table = list(csv.reader(io.StringIO((await csv_response.read()).decode())))
    assert csv_response.headers["Content-Disposition"].startswith("attachment")
    assert table[0] == ["id", "tags", "note"]
    assert table[1:] == [
        ["1", '["a","b"]', "plain"],
        ["2", "", 'has "quotes", and comma'],
        ["3", "[]", ""],
        ["4", '["x"]', "line\nbreak"],
    ]


async def test_a_failure_mid_stream_ends_ndjson_with_an_error_line(
    client: Client, mocked: aioresponses
) -> None:
    serve(mocked, fail_chunk=2)

    response = await client.post(
        "/api/query", json=INLINE, headers={"Accept": "application/x-ndjson"}
    )
    lines = [orjson.loads(line) for line in (await response.read()).splitlines()]

    assert response.status == 200
    assert lines[1:4] == [
        [1, ["a", "b"], "plain"],
        [2, None, 'has "quotes", and comma'],
        [3, [], ""],
    ]
    assert lines[-1]["error"]["code"] == "WAREHOUSE_ERROR"
    assert "row_count" not in lines[-1]


async def test_a_failure_mid_stream_cuts_csv_short(client: Client, mocked: aioresponses) -> None:
    serve(mocked, fail_chunk=2)

    response = await client.post("/api/query", json=INLINE, headers={"Accept": "text/csv"})

    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_errors_before_the_first_byte_are_ordinary_error_responses(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(
        STATEMENTS,
        payload={
            "statement_id": SID,
            "status": {
                "state": "FAILED",
                "error": {"error_code": "BAD_REQUEST", "message": "[X] bad"},
            },
        },
    )

    response = await client.post(
        "/api/query", json=INLINE, headers={"Accept": "application/x-ndjson"}
    )

    assert response.status == 400
    assert (await response.json())["error"]["code"] == "SQL_ERROR"


async def test_a_stream_says_in_server_timing_how_long_the_result_took(
    client: Client, mocked: aioresponses
) -> None:
    serve(mocked)

    response = await client.post(
        "/api/query", json=INLINE, headers={"Accept": "application/x-ndjson"}
    )

    await response.read()
    # Headers leave before the rows: the wait for the result, and the cache outcome.
    assert re.fullmatch(r"wait;dur=\d+\.\d, cache;desc=miss", response.headers["Server-Timing"])
