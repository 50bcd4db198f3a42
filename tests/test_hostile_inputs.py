"""No input reaches a 500: bounded numbers, decodable bodies, malformed HTTP, slow bodies,
engine internals, the `Server` header and forged log lines, all through real HTTP."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.api.models import MAX_SAFE_INT
from dbx_backend.api.openapi import openapi_document
from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.localwarehouse import LocalWarehouse
from dbx_backend.logs import TextFormatter
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import StartLocalWarehouse

TOKEN = "dapi-hostile-0123456789abcdef"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
FAST_POLL = PollSchedule(initial_s=0.01, factor=1.5, max_s=0.1)
QUERY_FILE = "-- param: n INT default 1\nSELECT :n AS n\n"
# Type names only DuckDB uses; Databricks users must never meet them.
DUCKDB_TYPES = re.compile(
    r"INT128|HUGEINT|UHUGEINT|\bU?INT(8|16|32|64)\b|BIGNUM|VARINT|_LITERAL|VARCHAR|\bBLOB\b"
)


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    return await local_warehouse(token=TOKEN, wait_timeout_scale=0.02)


def make_service(warehouse: LocalWarehouse, tmp_path: Any, **env: str) -> web.Application:
    (tmp_path / "one.sql").write_text(QUERY_FILE)
    settings = load_settings(
        {
            "DATABRICKS_HOST": warehouse.url,
            "DATABRICKS_HTTP_PATH": warehouse.http_path,
            "DATABRICKS_TOKEN": TOKEN,
            "STATEMENT_HANDLE_SECRET": "s" * 32,
            "QUERIES_DIR": str(tmp_path),
            **env,
        },
        env_file=None,
    )
    return create_app(settings, retry_policy=NO_WAIT, poll_schedule=FAST_POLL)


@pytest.fixture
async def service(warehouse: LocalWarehouse, tmp_path: Any, aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(make_service(warehouse, tmp_path, BODY_READ_TIMEOUT_S="0.3"))


async def post_json(client: Client, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()  # ints past 64 bits
    response = await client.post(
        path, data=data, headers={"Content-Type": "application/json", **headers}
    )
    return response.status, await response.json()


async def handle(client: Client) -> str:
    # Waits for the end, so its rows can be read (before that they are a 409).
    status, body = await post_json(client, "/api/statements", {"sql": "SELECT 1", "wait_s": 5})
    assert status == 202
    return str(body["statement_id"])


# -- numbers: bounded in the schema, enforced by the handlers --------------------------------

OUT_OF_RANGE_BODIES = [
    pytest.param({"row_limit": MAX_SAFE_INT + 1}, "row_limit", id="row-limit-2^53"),
    pytest.param({"row_limit": 10**30}, "row_limit", id="row-limit-huge"),
    pytest.param({"row_limit": -1}, "row_limit", id="row-limit-negative"),
    pytest.param({"timeout_s": 86_401}, "timeout_s", id="timeout-over-a-day"),
    pytest.param({"timeout_s": 1e308}, "timeout_s", id="timeout-huge"),
    pytest.param({"timeout_s": 0}, "timeout_s", id="timeout-zero"),
]
RAW_NUMBERS = [
    pytest.param(b'"timeout_s": NaN', "timeout_s", id="timeout-nan"),
    pytest.param(b'"timeout_s": Infinity', "timeout_s", id="timeout-infinity"),
    pytest.param(b'"timeout_s": 1e400', "timeout_s", id="timeout-overflows-to-infinity"),
    pytest.param(b'"row_limit": 1e400', "row_limit", id="row-limit-overflows"),
]
BODY_ROUTES = ["/api/query", "/api/statements", "/api/queries/one"]


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize(("extra", "field"), OUT_OF_RANGE_BODIES)
async def test_out_of_range_numbers_are_400_naming_the_field(
    service: Client, path: str, extra: dict[str, Any], field: str
) -> None:
    body = extra if path.startswith("/api/queries/") else {"sql": "SELECT 1", **extra}

    status, answer = await post_json(service, path, body)

    assert status == 400
    assert answer["error"]["code"] == "INVALID_REQUEST"
    assert answer["error"]["field"] == field


@pytest.mark.parametrize(("fragment", "field"), RAW_NUMBERS)
async def test_non_finite_numbers_are_400_naming_the_field(
    service: Client, fragment: bytes, field: str
) -> None:
    status, answer = await post_json(
        service, "/api/query", b'{"sql": "SELECT 1", ' + fragment + b"}"
    )

    assert status == 400
    assert answer["error"]["code"] == "INVALID_REQUEST"
    assert answer["error"]["field"] == field


@pytest.mark.parametrize("body", [b"\x0c", b"\x0b", b" \x0c\n", b"\r", b" \n"])
async def test_a_body_of_only_whitespace_is_not_an_empty_body(service: Client, body: bytes) -> None:
    status, answer = await post_json(service, "/api/queries/one", body)

    assert status == 400
    assert answer["error"]["code"] == "INVALID_REQUEST"


async def test_a_named_query_without_a_body_runs_with_its_defaults(service: Client) -> None:
    response = await service.post("/api/queries/one")

    assert response.status == 200


@pytest.mark.parametrize("accept", ["application/json", "application/x-ndjson"])
async def test_the_largest_row_limit_is_accepted(service: Client, accept: str) -> None:
    response = await service.post(
        "/api/query",
        json={"sql": "SELECT 7 AS n", "row_limit": MAX_SAFE_INT, "timeout_s": 86_400},
        headers={"Accept": accept},
    )

    assert response.status == 200
    assert "7" in await response.text()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param({"offset": str(MAX_SAFE_INT + 1)}, "offset", id="offset-2^53"),
        pytest.param({"offset": "9" * 40}, "offset", id="offset-huge"),
        pytest.param({"offset": "-1"}, "offset", id="offset-negative"),
        pytest.param({"offset": "\u0663"}, "offset", id="offset-arabic-digit"),
        pytest.param({"limit": "0"}, "limit", id="limit-zero"),
        pytest.param({"limit": "1e3"}, "limit", id="limit-float"),
        pytest.param({"limit": str(MAX_SAFE_INT + 1)}, "limit", id="limit-2^53"),
    ],
)
async def test_out_of_range_query_strings_are_400_naming_the_field(
    service: Client, query: dict[str, str], field: str
) -> None:
    response = await service.get(f"/api/statements/{await handle(service)}/rows", params=query)

    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == ("INVALID_REQUEST", field)


async def test_the_largest_offset_is_an_empty_page(service: Client) -> None:
    response = await service.get(
        f"/api/statements/{await handle(service)}/rows", params={"offset": str(MAX_SAFE_INT)}
    )

    assert response.status == 200
    assert (await response.json())["rows"] == []


def _numeric_schemas(schema: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        if schema.get("type") in ("integer", "number"):
            yield where, schema
        for key, value in schema.items():
            yield from _numeric_schemas(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from _numeric_schemas(value, f"{where}[{index}]")


def test_every_numeric_request_field_has_bounds_in_the_openapi_document() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    inputs = {"QueryRequest", "NamedQueryRequest", "TypedParamModel"}
    found = [
        (f"{name}{where}", schema)
        for name in inputs
        for where, schema in _numeric_schemas(schemas[name], "")
        # Parameter values are the caller's data, sent on as SQL values: see the next test.
        if not where.startswith(".properties.params") and not where.startswith(".properties.value")
    ]
    for path in document["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                found += [(parameter["name"], s) for _, s in _numeric_schemas(parameter, "")]

    assert {where.split(".")[-2] if "." in where else where for where, _ in found} >= {
        "row_limit",
        "timeout_s",
        "offset",
        "limit",
    }
    for where, schema in found:
        assert "maximum" in schema, where
        assert "minimum" in schema or "exclusiveMinimum" in schema, where


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
async def test_an_integer_parameter_outside_bigint_is_400_naming_it(
    service: Client, value: int
) -> None:
    status, answer = await post_json(
        service, "/api/query", {"sql": "SELECT :x AS x", "params": {"x": value}}
    )

    assert status == 400
    assert (answer["error"]["code"], answer["error"]["field"]) == ("INVALID_PARAMS", "params.x")


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
async def test_an_integer_parameter_at_the_bigint_bounds_is_exact(
    service: Client, value: int
) -> None:
    status, answer = await post_json(
        service, "/api/query", {"sql": "SELECT :x AS x", "params": {"x": value}}
    )

    assert status == 200
    assert answer["rows"] == [[value]]


# -- engine internals never reach a message ---------------------------------------------------

ENGINE_SQL = [
    pytest.param("SELECT 170141183460469231731687303715884105727", id="int128-literal"),
    pytest.param("SELECT 170141183460469231731687303715884105727 * 2", id="int128-overflow"),
    pytest.param("SELECT 9223372036854775807 + 1", id="bigint-overflow"),
    pytest.param("SELECT sum(9223372036854775807) FROM range(3)", id="sum-past-bigint"),
    pytest.param("SELECT 1 LIMIT 99999999999999999999999", id="huge-limit"),
    pytest.param("SELECT CAST('x' AS BIGINT)", id="cast-malformed"),
    pytest.param("SELECT CAST(300 AS TINYINT)", id="cast-overflow"),
    pytest.param("SELECT CAST(1e30 AS BIGINT)", id="double-overflow"),
    pytest.param("SELECT CAST(99999999999999999999999999999999999999999 AS BIGINT)", id="bignum"),
    pytest.param("SELECT 'a' + 1", id="string-plus-int"),
    pytest.param("SELECT array(1, 2) + 1", id="array-plus-int"),
    pytest.param("SELECT CAST('abc' AS BINARY) + 1", id="binary-plus-int"),
]


@pytest.mark.parametrize("sql", ENGINE_SQL)
async def test_sql_errors_name_databricks_types_never_duckdb_ones(
    service: Client, sql: str
) -> None:
    status, answer = await post_json(service, "/api/query", {"sql": sql})

    assert status == 400
    assert answer["error"]["code"] == "SQL_ERROR"
    assert DUCKDB_TYPES.search(answer["error"]["message"]) is None, answer["error"]["message"]


async def test_a_result_past_bigint_is_an_overflow_not_a_500(service: Client) -> None:
    for accept in ("application/json", "application/x-ndjson", "text/csv"):
        response = await service.post(
            "/api/query",
            json={"sql": "SELECT 170141183460469231731687303715884105727 AS n"},
            headers={"Accept": accept},
        )

        assert response.status == 400, accept
        error = (await response.json())["error"]
        assert (error["code"], error["sql_state"]) == ("SQL_ERROR", "22003")
        assert error["message"].startswith("[CAST_OVERFLOW]")


@pytest.mark.parametrize("row_limit", [2**63, 10**30, -1])
async def test_the_local_warehouse_refuses_a_row_limit_outside_int64(
    warehouse: LocalWarehouse, row_limit: int
) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        response = await session.post(
            f"{warehouse.url}/api/2.0/sql/statements",
            json={"statement": "SELECT 1", "warehouse_id": "local", "row_limit": row_limit},
        )

        assert response.status == 400
        assert (await response.json())["error_code"] == "INVALID_PARAMETER_VALUE"


async def test_the_local_warehouse_takes_the_largest_int64_row_limit(
    warehouse: LocalWarehouse,
) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        response = await session.post(
            f"{warehouse.url}/api/2.0/sql/statements",
            json={
                "statement": "SELECT 1",
                "warehouse_id": "local",
                "row_limit": 2**63 - 1,
                "wait_timeout": "5s",
            },
        )

        body = await response.json()
        assert response.status == 200
        assert body["status"]["state"] == "SUCCEEDED"
        assert body["result"]["data_array"] == [["1"]]


# -- bodies: encodings and late arrival -----------------------------------------------------

SELECT_ONE = b'{"sql": "SELECT 1 AS n"}'


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        pytest.param("gzip", gzip.compress(SELECT_ONE), id="gzip"),
        pytest.param("deflate", zlib.compress(SELECT_ONE), id="deflate"),
        pytest.param("identity", SELECT_ONE, id="identity"),
    ],
)
async def test_a_compressed_body_is_decoded(service: Client, encoding: str, data: bytes) -> None:
    status, answer = await post_json(service, "/api/query", data, **{"Content-Encoding": encoding})

    assert status == 200
    assert answer["rows"] == [[1]]


@pytest.mark.parametrize(
    ("encoding", "data", "status", "code"),
    [
        pytest.param("gzip", b"\x1f\x8b not gzip", 400, "INVALID_REQUEST", id="bad-gzip"),
        pytest.param("gzip", gzip.compress(SELECT_ONE)[:-6], 400, "INVALID_REQUEST", id="cut"),
        pytest.param("gzip", SELECT_ONE, 400, "INVALID_REQUEST", id="plain-called-gzip"),
        pytest.param("deflate", b"\x00\x01\x02", 400, "INVALID_REQUEST", id="bad-deflate"),
        pytest.param("br", SELECT_ONE, 415, "UNSUPPORTED_MEDIA_TYPE", id="brotli"),
        pytest.param("zstd", SELECT_ONE, 415, "UNSUPPORTED_MEDIA_TYPE", id="zstd"),
        pytest.param("gzip, gzip", SELECT_ONE, 415, "UNSUPPORTED_MEDIA_TYPE", id="stacked"),
        pytest.param("\u00e9\u00e9", SELECT_ONE, 415, "UNSUPPORTED_MEDIA_TYPE", id="unicode"),
        pytest.param(
            "gzip", gzip.compress(b" " * 2_000_000), 413, "PAYLOAD_TOO_LARGE", id="gzip-bomb"
        ),
    ],
)
async def test_a_body_that_cannot_be_decoded_is_refused_in_the_envelope(
    service: Client,
    caplog: pytest.LogCaptureFixture,
    encoding: str,
    data: bytes,
    status: int,
    code: str,
) -> None:
    response = await service.post(
        "/api/query",
        data=data,
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )

    assert response.status == status
    assert (await response.json())["error"]["code"] == code
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def raw_exchange(port: int, *parts: bytes, pause_s: float = 0.0) -> bytes:
    """Send `parts` over one loopback connection (pausing between them), return the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index, part in enumerate(parts):
            if index and pause_s:
                await asyncio.sleep(pause_s)
            writer.write(part)
            await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout=10)
    finally:
        writer.close()


def head_and_body(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status_line, {k.lower(): v for k, v in headers.items()}, body


POST_HEAD = b"POST /api/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


async def test_a_body_that_does_not_arrive_in_time_is_408_and_the_connection_closes(
    service: Client,
) -> None:
    assert service.port is not None
    answer = await raw_exchange(
        service.port, POST_HEAD + b"Content-Length: 100\r\n\r\n", b'{"sql": "SEL', pause_s=0.05
    )

    status_line, headers, body = head_and_body(answer)
    assert status_line.startswith("HTTP/1.1 408")
    assert headers["connection"] == "close"
    error = orjson.loads(body)["error"]
    assert (error["code"], error["field"]) == ("REQUEST_TIMEOUT", "body")


async def test_a_chunked_body_broken_midway_is_answered_in_time(service: Client) -> None:
    assert service.port is not None
    answer = await raw_exchange(
        service.port,
        POST_HEAD + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"sql\r\n',
        b"zz\r\nnot a chunk\r\n",
        pause_s=0.05,
    )

    status_line, _, body = head_and_body(answer)
    assert status_line.startswith("HTTP/1.1 408")
    assert orjson.loads(body)["error"]["code"] == "REQUEST_TIMEOUT"


async def test_a_client_that_leaves_mid_body_is_a_499_line_not_an_error(
    service: Client, caplog: pytest.LogCaptureFixture
) -> None:
    assert service.port is not None
    caplog.set_level(logging.INFO)
    _, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(POST_HEAD + b'Content-Length: 100\r\n\r\n{"sql": "SEL')
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    statuses: list[object] = []
    for _ in range(300):  # the server notices the closed socket within milliseconds
        statuses = [getattr(r, "status", None) for r in caplog.records if r.name.endswith("access")]
        if statuses:
            break
        await asyncio.sleep(0.01)

    assert statuses == [499]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


# -- malformed HTTP: logged and counted like any request, no stack trace ---------------------

MALFORMED = [
    pytest.param(b"GARBAGE\r\n\r\n", id="not-http"),
    pytest.param(b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", id="bad-version"),
    pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nNo Colon Here\r\n\r\n", id="bad-header"),
    pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", id="nul-in-header"),
    pytest.param(b"GET /he alth HTTP/1.1\r\nHost: x\r\n\r\n", id="space-in-path"),
    pytest.param(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="long-line"),
    pytest.param(
        POST_HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", id="smuggling"
    ),
    pytest.param(POST_HEAD + b"Content-Length: -1\r\n\r\n", id="negative-length"),
    pytest.param(POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"),
]


@pytest.mark.parametrize("request_bytes", MALFORMED)
async def test_malformed_http_gets_a_400_an_access_line_and_a_metric_and_no_traceback(
    service: Client, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    assert service.port is not None
    caplog.set_level(logging.DEBUG)

    status_line, headers, _ = head_and_body(await raw_exchange(service.port, request_bytes))
    metrics = await (await service.get("/metrics")).text()

    assert status_line.split(" ")[1] == "400"
    assert headers["server"] == "dbx-backend"
    access = [r for r in caplog.records if r.name == "dbx_backend.access"]
    assert [getattr(r, "route", None) for r in access][:1] == ["malformed"]
    assert 'dbx_http_requests_total{method="-",route="malformed",status="400"} 1.0' in metrics
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [r for r in caplog.records if r.exc_info] == []


# -- what the service says about itself -------------------------------------------------------


async def test_no_server_header_names_a_version(service: Client, warehouse: LocalWarehouse) -> None:
    answers = [
        await service.get("/health"),
        await service.get("/no/such/route"),
        await service.post("/api/query", data=b"{", headers={"Content-Type": "application/json"}),
    ]
    async with aiohttp.ClientSession() as session:
        answers.append(await session.get(f"{warehouse.url}/api/2.0/sql/statements/x"))
        answers.append(await session.get(f"{warehouse.url}/nowhere"))

    for response in answers:
        assert response.headers["Server"] == "dbx-backend", response.url


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/health%0A2099-01-01 00:00:00 INFO dbx_backend.access forged", id="lf"),
        pytest.param("/health%0D%0Aforged", id="crlf"),
        pytest.param("/health%E2%80%A8forged", id="unicode-line-separator"),
        pytest.param("/api/queries/x%0Aforged", id="named-query"),
    ],
)
async def test_text_log_lines_escape_control_characters_from_the_request(
    service: Client, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.INFO)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    loggers = [logging.getLogger(name) for name in ("dbx_backend.access", "dbx_backend.api")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        response = await service.get(path)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)

    assert response.status in (404, 405)
    lines = out.getvalue().splitlines()
    assert lines, "the request was not logged"
    assert all(
        re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ dbx_backend", line) for line in lines
    )
    assert any("forged" in line and "\\" in line for line in lines)
