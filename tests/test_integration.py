"""The service against the local warehouse over loopback: real HTTP end to end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pyarrow as pa
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.app import create_app
from dbx_backend.config import Settings, load_settings
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.localwarehouse import Fault, LocalWarehouse
from dbx_backend.warehouse import auth
from dbx_backend.warehouse.retry import NO_WAIT, RetryPolicy
from tests.conftest import StartLocalWarehouse, StartService, warehouse_settings

TOKEN = "dapi-integration-0123456789abcdef"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
FAST_POLL = PollSchedule(initial_s=0.01, factor=1.5, max_s=0.1)


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    return await local_warehouse(token=TOKEN, chunk_rows=1000, wait_timeout_scale=0.02)


def service_settings(warehouse: LocalWarehouse, **env: str) -> Settings:
    return warehouse_settings(warehouse, **env)


@pytest.fixture
async def service(warehouse: LocalWarehouse, start_service: StartService) -> Client:
    return await start_service(service_settings(warehouse), poll_schedule=FAST_POLL)


async def query(service: Client, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    response = await service.post("/api/query", json=body, headers=headers)
    return response.status, await response.json()


async def wait_until(condition: Callable[[], bool], within_s: float = 2.0) -> bool:
    """Poll `condition` every 10 ms, at most `within_s` seconds (bounded in count and time)."""
    for _ in range(int(within_s / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def wait_for_state(
    warehouse: LocalWarehouse, statement_id: str, state: str, within_s: float = 2.0
) -> str:
    await wait_until(lambda: warehouse.statement_state(statement_id) == state, within_s)
    return warehouse.statement_state(statement_id)


SP_SECRET = "sp-secret-value-123"
OAUTH_WAREHOUSE = {"token": TOKEN, "oauth_clients": {"sp-id": SP_SECRET}, "wait_timeout_scale": 1.0}


def oauth_service(warehouse: LocalWarehouse) -> web.Application:
    """The service authenticating as a service principal (OAuth M2M), not with a token."""
    settings = load_settings(
        {
            "DATABRICKS_HOST": warehouse.url,
            "DATABRICKS_HTTP_PATH": warehouse.http_path,
            "DATABRICKS_CLIENT_ID": "sp-id",
            "DATABRICKS_CLIENT_SECRET": SP_SECRET,
        },
        env_file=None,
    )
    return create_app(settings, retry_policy=NO_WAIT)


RANGE_SQL = "SELECT id, id * 2 AS twice, CAST(id AS STRING) AS label FROM range(25000) t(id)"


@pytest.mark.parametrize(
    ("disposition", "fmt"),
    [
        pytest.param("INLINE", "JSON_ARRAY", id="inline"),
        pytest.param("EXTERNAL_LINKS", "JSON_ARRAY", id="links-json"),
        pytest.param("EXTERNAL_LINKS", "ARROW_STREAM", id="links-arrow"),
    ],
)
async def test_a_multi_chunk_result_arrives_whole_and_in_order(
    warehouse: LocalWarehouse, start_service: StartService, disposition: str, fmt: str
) -> None:
    service = await start_service(service_settings(warehouse, EXTERNAL_LINKS_FORMAT=fmt))

    status, body = await query(service, {"sql": RANGE_SQL, "disposition": disposition})

    assert status == 200
    assert body["row_count"] == 25000
    assert body["rows"][:2] == [[0, 0, "0"], [1, 2, "1"]]
    assert [row[0] for row in body["rows"]] == list(range(25000))
    chunk_calls = [r for r in warehouse.requests if "/result/chunks/" in r.path]
    assert len(chunk_calls) >= 24


async def test_streamed_ndjson_equals_the_buffered_result(service: Client) -> None:
    _, buffered = await query(service, {"sql": RANGE_SQL})

    response = await service.post(  # run fresh: a cached answer would not know the chunks
        "/api/query",
        json={"sql": RANGE_SQL},
        headers={"Accept": "application/x-ndjson", "Cache-Control": "no-cache"},
    )
    lines = [orjson.loads(line) for line in (await response.read()).splitlines()]

    assert lines[0]["columns"] == buffered["columns"]
    assert (lines[0]["total_row_count"], lines[0]["chunk_count"]) == (25000, 25)
    assert lines[1:-1] == buffered["rows"]
    assert (lines[-1]["row_count"], lines[-1]["truncated"]) == (25000, False)
    assert "fetch;dur=" in lines[-1]["server_timing"]


async def test_a_slow_statement_is_polled_to_its_result(
    service: Client, warehouse: LocalWarehouse
) -> None:
    status, body = await query(service, {"sql": "SELECT sleep_ms(300) AS slept, 42 AS answer"})

    assert status == 200
    assert body["rows"][0][-1] == 42
    polls = [r for r in warehouse.requests if r.method == "GET" and "/chunks/" not in r.path]
    assert len(polls) >= 2


async def test_past_the_deadline_the_warehouse_sees_a_cancel_and_the_caller_a_504(
    service: Client, warehouse: LocalWarehouse
) -> None:
    status, body = await query(service, {"sql": "SELECT sleep_ms(5000)", "timeout_s": 0.5})

    assert status == 504
    assert body["error"]["code"] == "QUERY_TIMEOUT"
    statement_id = body["error"]["statement_id"]
    assert await wait_for_state(warehouse, statement_id, "CANCELED") == "CANCELED"
    assert any(r.path.endswith(f"{statement_id}/cancel") for r in warehouse.requests)


@pytest.mark.parametrize(
    ("sql", "error_class"),
    [
        pytest.param("SELEC 1", "PARSE_SYNTAX_ERROR", id="parse"),
        pytest.param("SELECT * FROM no_such_table", "TABLE_OR_VIEW_NOT_FOUND", id="no-table"),
        pytest.param("SELECT :missing", "UNBOUND_SQL_PARAMETER", id="unbound"),
        pytest.param("SELECT 1 / 0", "DIVIDE_BY_ZERO", id="divide-by-zero"),
    ],
)
async def test_sql_errors_are_400_with_the_error_class(
    warehouse: LocalWarehouse, aiohttp_client: MakeClient, sql: str, error_class: str
) -> None:
    # READ_ONLY off: the warehouse, not our parser, must be the one to reject these.
    app = create_app(service_settings(warehouse, READ_ONLY="false"), retry_policy=NO_WAIT)
    service = await aiohttp_client(app)

    status, body = await query(service, {"sql": sql})

    assert status == 400
    assert body["error"]["code"] == "SQL_ERROR"
    assert f"[{error_class}]" in body["error"]["message"]
    assert body["error"]["sql_state"]


@pytest.mark.parametrize(
    ("endpoint", "fault", "times", "status"),
    [
        pytest.param("execute", Fault.status(503), 2, 200, id="execute-503-retried"),
        pytest.param("execute", Fault.status(429, retry_after=0), 2, 200, id="execute-429-retried"),
        pytest.param("execute", Fault.status(500), 1, 503, id="execute-500-not-retried"),
        pytest.param("get_statement", Fault.status(500), 2, 200, id="get-500-retried"),
        pytest.param("get_statement", Fault.drop(), 2, 200, id="get-dropped-retried"),
        pytest.param("get_chunk", Fault.status(503), 2, 200, id="chunk-503-retried"),
        pytest.param("get_chunk", Fault.drop(), 1, 200, id="chunk-dropped-retried"),
        pytest.param(
            "get_chunk",
            Fault.body(502, "<html><title>Bad Gateway</title></html>", content_type="text/html"),
            1,
            200,
            id="chunk-html-retried",
        ),
        pytest.param("get_statement", Fault.status(503), 10, 503, id="retries-exhausted"),
    ],
)
async def test_injected_faults_are_retried_or_mapped_and_no_row_is_lost(
    service: Client,
    warehouse: LocalWarehouse,
    endpoint: str,
    fault: Fault,
    times: int,
    status: int,
) -> None:
    warehouse.faults.add(endpoint, fault, times=times)
    sql = "SELECT sleep_ms(100) AS s, id FROM range(3500) t(id)"

    code, body = await query(service, {"sql": sql})

    assert code == status
    if status == 200:
        assert [row[1] for row in body["rows"]] == list(range(3500))
    executes = [
        r for r in warehouse.requests if r.method == "POST" and r.path.endswith("/statements")
    ]
    if endpoint == "execute" and status == 503:
        assert len(executes) == 1  # a 500 may have run it: never sent twice


def polled_ids(warehouse: LocalWarehouse) -> list[str]:
    return [
        r.path.split("/")[5]
        for r in warehouse.requests
        if r.method == "GET" and "/sql/statements/" in r.path and "/chunks/" not in r.path
    ]


async def test_a_caller_that_disconnects_while_polling_cancels_the_statement(
    warehouse: LocalWarehouse, aiohttp_client: MakeClient
) -> None:
    app = create_app(
        service_settings(warehouse, SUBMIT_WAIT_TIMEOUT_S="0"),
        retry_policy=NO_WAIT,
        poll_schedule=FAST_POLL,
    )
    service = await aiohttp_client(app)
    task = asyncio.create_task(service.post("/api/query", json={"sql": "SELECT sleep_ms(10000)"}))
    assert await wait_until(lambda: bool(polled_ids(warehouse)))

    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    statement_id = polled_ids(warehouse)[0]
    assert await wait_for_state(warehouse, statement_id, "CANCELED", within_s=1.0) == "CANCELED"


async def test_a_caller_that_disconnects_during_submit_cancels_once_the_id_is_known(
    warehouse: LocalWarehouse, service: Client
) -> None:
    task = asyncio.create_task(service.post("/api/query", json={"sql": "SELECT sleep_ms(10000)"}))
    assert await wait_until(lambda: warehouse.active_statements() == 1)

    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert await wait_until(lambda: warehouse.active_statements() == 0, within_s=3.0)
    assert any(r.path.endswith("/cancel") for r in warehouse.requests)


async def test_parameters_of_every_scalar_type_bind(service: Client) -> None:
    body = {
        "sql": "SELECT :i AS i, :f AS f, :b AS b, :s AS s, :n AS n, :d AS d, :dec AS dec",
        "params": {
            "i": 9007199254740993,
            "f": 1.5,
            "b": True,
            "s": "it's",
            "n": None,
            "d": {"value": "1969-07-20", "type": "DATE"},
            "dec": {"value": "12.50", "type": "DECIMAL(10,2)"},
        },
    }

    status, answer = await query(service, body)

    assert status == 200
    assert answer["rows"] == [[9007199254740993, 1.5, True, "it's", None, "1969-07-20", "12.50"]]
    types = [c["type"] for c in answer["columns"]]
    assert types == ["LONG", "DOUBLE", "BOOLEAN", "STRING", "STRING", "DATE", "DECIMAL"]


async def test_every_type_round_trips_through_the_normalizer(service: Client) -> None:
    sql = (
        "SELECT CAST(1 AS TINYINT) AS b, CAST(2 AS SMALLINT) AS s, CAST(3 AS INT) AS i, "
        "CAST(9223372036854775807 AS BIGINT) AS l, CAST(1.5 AS FLOAT) AS f, "
        "CAST('NaN' AS DOUBLE) AS d, CAST(-0.0 AS DOUBLE) AS nz, "
        "CAST('123.4500' AS DECIMAL(38,4)) AS dec, true AS t, '' AS empty, 'héllo ☃' AS u, "
        "DATE'1900-02-28' AS dt, TIMESTAMP'2024-01-15 09:30:00.123' AS ntz, "
        "ARRAY(1, 2) AS arr, NAMED_STRUCT('a', 1, 'b', 'x') AS st, MAP('k', 1) AS m, "
        "CAST(NULL AS STRING) AS nul, CAST('2024-01-15 09:30:00' AS TIMESTAMP_NTZ) AS ntz2, "
        "X'CAFE' AS bin"
    )

    status, body = await query(service, {"sql": sql})

    assert status == 200, body
    assert body["rows"][0] == [
        1,
        2,
        3,
        9223372036854775807,
        1.5,
        "NaN",
        -0.0,
        "123.4500",
        True,
        "",
        "héllo ☃",
        "1900-02-28",
        "2024-01-15T09:30:00.123Z",
        [1, 2],
        {"a": 1, "b": "x"},
        {"k": 1},
        None,
        "2024-01-15T09:30:00.000",
        "yv4=",
    ]


NESTED_SQL = (
    "SELECT NAMED_STRUCT('id', CAST(9007199254740993 AS BIGINT), "
    "'price', CAST(1.10 AS DECIMAL(10,2))) AS s, "
    "ARRAY(CAST(1.10 AS DECIMAL(4,2)), CAST(2.5 AS DECIMAL(4,2))) AS prices, "
    "MAP('a', CAST(9007199254740993 AS BIGINT)) AS m, MAP(1, CAST(0.5 AS DECIMAL(3,2))) AS mi, "
    "ARRAY(X'CAFE') AS blobs"
)
NESTED_ROW = [
    {"id": 9007199254740993, "price": "1.10"},
    ["1.10", "2.50"],
    {"a": 9007199254740993},
    [{"key": 1, "value": "0.50"}],
    ["yv4="],
]
NESTED_CSV = (
    "s,prices,m,mi,blobs\r\n"
    '"{""id"":9007199254740993,""price"":""1.10""}","[""1.10"",""2.50""]",'
    '"{""a"":9007199254740993}","[{""key"":1,""value"":""0.50""}]","[""yv4=""]"\r\n'
)
WAREHOUSE_FORMATS = [
    pytest.param("INLINE", "JSON_ARRAY", id="inline-json-array"),
    pytest.param("EXTERNAL_LINKS", "JSON_ARRAY", id="links-json-array"),
    pytest.param("EXTERNAL_LINKS", "ARROW_STREAM", id="links-arrow"),
]


INTERVAL_SQL = (
    "SELECT INTERVAL '1 year 2 months 3 days 04:05:06.5' AS i, -INTERVAL '90 minutes' AS neg, "
    "[INTERVAL 3 DAY] AS xs"
)
INTERVAL_ROW = ["1 year 2 months 3 days 04:05:06.5", "-01:30:00", ["3 days"]]


async def three_formats(
    service: Client, sql: str, disposition: str
) -> tuple[dict[str, Any], list[Any], str]:
    """The same query answered as JSON, as NDJSON (its lines parsed) and as CSV text."""
    body = {"sql": sql, "disposition": disposition}
    _, buffered = await query(service, body)
    ndjson = await service.post("/api/query", json=body, headers={"Accept": "application/x-ndjson"})
    lines = [orjson.loads(line) for line in (await ndjson.read()).splitlines()]
    csv = await service.post("/api/query", json=body, headers={"Accept": "text/csv"})
    return buffered, lines, await csv.text()


@pytest.mark.parametrize(("disposition", "fmt"), WAREHOUSE_FORMATS)
async def test_intervals_are_the_warehouses_text_in_json_ndjson_and_csv(
    warehouse: LocalWarehouse, start_service: StartService, disposition: str, fmt: str
) -> None:
    # ARROW_STREAM chunks carry them as Arrow intervals, JSON_ARRAY chunks as text.
    service = await start_service(service_settings(warehouse, EXTERNAL_LINKS_FORMAT=fmt))

    buffered, lines, csv = await three_formats(service, INTERVAL_SQL, disposition)

    assert buffered["rows"] == [INTERVAL_ROW]
    assert lines[1] == INTERVAL_ROW
    assert csv == ('i,neg,xs\r\n1 year 2 months 3 days 04:05:06.5,-01:30:00,"[""3 days""]"\r\n')


@pytest.mark.parametrize(("disposition", "fmt"), WAREHOUSE_FORMATS)
async def test_nested_longs_and_decimals_are_exact_in_json_ndjson_and_csv(
    warehouse: LocalWarehouse, start_service: StartService, disposition: str, fmt: str
) -> None:
    service = await start_service(service_settings(warehouse, EXTERNAL_LINKS_FORMAT=fmt))

    buffered, lines, csv = await three_formats(service, NESTED_SQL, disposition)

    assert buffered["rows"] == [NESTED_ROW]
    assert lines[1] == NESTED_ROW
    assert lines[0]["columns"] == buffered["columns"]
    assert csv == NESTED_CSV
    assert [c["json_type"] for c in buffered["columns"]] == [
        "object",
        "array",
        "object",
        "array",
        "array",
    ]
    assert buffered["columns"][0]["fields"] == [
        {"name": "id", "json_type": "number", "type": "LONG"},
        {"name": "price", "json_type": "string", "type": "DECIMAL"},
    ]


@pytest.mark.parametrize(("disposition", "fmt"), WAREHOUSE_FORMATS)
async def test_long_as_string_holds_at_every_depth_and_says_so_in_json_type(
    warehouse: LocalWarehouse, start_service: StartService, disposition: str, fmt: str
) -> None:
    service = await start_service(service_settings(warehouse, EXTERNAL_LINKS_FORMAT=fmt))
    body = {"sql": NESTED_SQL, "disposition": disposition, "long_as_string": True}

    _, result = await query(service, body)

    assert result["rows"][0][0] == {"id": "9007199254740993", "price": "1.10"}
    assert result["rows"][0][2] == {"a": "9007199254740993"}
    assert result["columns"][0]["fields"][0] == {
        "name": "id",
        "json_type": "string",
        "type": "LONG",
    }
    assert result["columns"][2]["values"] == {"json_type": "string", "type": "LONG"}


async def test_read_only_refusals_never_reach_the_warehouse(
    service: Client, warehouse: LocalWarehouse
) -> None:
    status, _ = await query(service, {"sql": "DROP TABLE t"})

    assert status == 403
    assert warehouse.requests == []


async def test_oauth_service_principal_against_the_token_endpoint(
    aiohttp_client: MakeClient, local_warehouse: StartLocalWarehouse
) -> None:
    warehouse = await local_warehouse(**OAUTH_WAREHOUSE)
    service = await aiohttp_client(oauth_service(warehouse))

    results = await asyncio.gather(*(query(service, {"sql": f"SELECT {n}"}) for n in range(8)))

    assert [status for status, _ in results] == [200] * 8
    token_calls = [r for r in warehouse.requests if r.path.startswith("/oidc/v1/token")]
    assert len(token_calls) == 1
    assert all(SP_SECRET not in str(body) for _, body in results)


async def test_graceful_shutdown_cancels_what_is_still_running(
    warehouse: LocalWarehouse,
) -> None:
    app = create_app(
        service_settings(warehouse, SUBMIT_WAIT_TIMEOUT_S="0"),
        retry_policy=NO_WAIT,
        poll_schedule=FAST_POLL,
    )
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        pending = asyncio.create_task(
            session.post(f"http://{host}:{port}/api/query", json={"sql": "SELECT sleep_ms(10000)"})
        )
        for _ in range(200):
            if warehouse.active_statements():
                break
            await asyncio.sleep(0.01)

        await runner.cleanup()
        with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
            await asyncio.wait_for(pending, 2)

    assert await wait_until(lambda: warehouse.active_statements() == 0)
    cancels = [r for r in warehouse.requests if r.method == "POST" and "/cancel" in r.path]
    assert len(cancels) == 1


async def test_each_statement_carries_query_tags_with_the_request_id(
    service: Client, warehouse: LocalWarehouse
) -> None:
    await service.post("/api/query", json={"sql": "SELECT 1"}, headers={"X-Request-ID": "rq-77"})

    (execute,) = [r for r in warehouse.requests if r.endpoint == "execute"]
    assert {"key": "request_id", "value": "rq-77"} in execute.json["query_tags"]
    assert {"key": "service", "value": "dbx-backend"} in execute.json["query_tags"]


async def test_a_token_endpoint_that_stays_down_gives_503_and_a_clear_log_line(
    aiohttp_client: MakeClient,
    local_warehouse: StartLocalWarehouse,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every attempt of the client re-runs the token fetch's own retries: without waits here.
    monkeypatch.setattr(auth, "RETRY_DELAYS_S", (0.0, 0.0))
    warehouse = await local_warehouse(**OAUTH_WAREHOUSE)
    warehouse.faults.add("token", Fault.status(500), times=None)
    service = await aiohttp_client(oauth_service(warehouse))

    status, body = await query(service, {"sql": "SELECT 1"})

    assert status == 503
    assert body["error"]["code"] == "WAREHOUSE_UNAVAILABLE"
    assert any("token endpoint" in record.getMessage() for record in caplog.records)
    assert not any(SP_SECRET in record.getMessage() for record in caplog.records)
    assert not [r for r in warehouse.requests if r.endpoint == "execute"]


async def test_a_submit_retried_past_the_deadline_still_ends_cancelled(
    warehouse: LocalWarehouse, aiohttp_client: MakeClient
) -> None:
    """The retry's answer arrives after the deadline; its statement id is used to cancel."""
    policy = RetryPolicy(initial_delay_s=0, max_delay_s=0, max_retry_after_s=5)
    service = await aiohttp_client(
        create_app(service_settings(warehouse), retry_policy=policy, poll_schedule=FAST_POLL)
    )
    warehouse.faults.add("execute", Fault.status(503, retry_after=1))

    status, _ = await query(service, {"sql": "SELECT sleep_ms(20000)", "timeout_s": 1.2})

    assert status == 504
    assert await wait_until(
        lambda: any(r.path.endswith("/cancel") for r in warehouse.requests), within_s=5
    )
    assert await wait_until(lambda: warehouse.active_statements() == 0)


async def test_a_stream_outlives_its_timeout_while_the_client_reads_slowly(
    warehouse: LocalWarehouse, start_service: StartService
) -> None:
    service = await start_service(service_settings(warehouse))
    sql = "SELECT id, repeat('x', 1000) AS pad FROM range(30000) t(id)"

    response = await service.post(
        "/api/query",
        json={"sql": sql, "timeout_s": 3},  # room for a loaded machine to finish the statement
        headers={"Accept": "application/x-ndjson"},
    )
    assert response.status == 200
    await response.content.readline()
    await asyncio.sleep(3.5)  # past timeout_s, with the result already being read
    lines = (await response.read()).splitlines()

    footer = orjson.loads(lines[-1])
    assert (footer["row_count"], footer["truncated"]) == (30000, False)


async def test_a_statements_submit_past_its_timeout_is_504_and_cancelled(
    warehouse: LocalWarehouse, service: Client
) -> None:
    warehouse.faults.add("execute", Fault.delay(1.0))

    response = await service.post(
        "/api/statements", json={"sql": "SELECT sleep_ms(20000)", "timeout_s": 0.3}
    )

    assert response.status == 504
    assert (await response.json())["error"]["code"] == "QUERY_TIMEOUT"
    assert await wait_until(
        lambda: any(r.path.endswith("/cancel") for r in warehouse.requests), within_s=5
    )
    assert await wait_until(lambda: warehouse.active_statements() == 0)


@pytest.mark.parametrize("fmt", ["JSON_ARRAY", "ARROW_STREAM"])
async def test_a_first_chunk_handed_on_in_two_parts_loses_and_reorders_no_row(
    local_warehouse: StartLocalWarehouse, start_service: StartService, fmt: str
) -> None:
    # The first 1,000 rows of the first chunk (3,000 rows) go on before the rest of it.
    warehouse = await local_warehouse(token=TOKEN, chunk_rows=3000, wait_timeout_scale=0.02)
    service = await start_service(service_settings(warehouse, EXTERNAL_LINKS_FORMAT=fmt))
    body = {
        "sql": "SELECT id, id * 2 AS twice FROM range(7000) t(id)",
        "disposition": "EXTERNAL_LINKS",
    }

    _, buffered = await query(service, body)
    ndjson = await service.post("/api/query", json=body, headers={"Accept": "application/x-ndjson"})
    lines = [orjson.loads(line) for line in (await ndjson.read()).splitlines()]
    arrow = await service.post(
        "/api/query", json=body, headers={"Accept": "application/vnd.apache.arrow.stream"}
    )
    table = pa.ipc.open_stream(await arrow.read()).read_all()

    expected = [[i, 2 * i] for i in range(7000)]
    assert buffered["rows"] == expected
    assert lines[1:-1] == expected
    assert lines[-1]["row_count"] == 7000
    assert table.column("id").to_pylist() == list(range(7000))
