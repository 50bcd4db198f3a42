"""The result cache, coalescing and cold starts, end to end: the service over loopback HTTP
against the local warehouse."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.keys import QUERY_SERVICE, RESULT_CACHE, SHARED_STATE, WAREHOUSE_TRACKER
from dbx_backend.localwarehouse import LocalWarehouse
from dbx_backend.logs import JsonFormatter
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import WALL_CLOCK_START, FakeClock, StartLocalWarehouse

TOKEN = "dapi-cache-integration-0123456789"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
FAST_POLL = PollSchedule(initial_s=0.01, factor=1.5, max_s=0.05)
COUNT = "SELECT count(*) AS n FROM range(10)"


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    return await local_warehouse(token=TOKEN, wait_timeout_scale=0.02)


MakeService = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_service(warehouse: LocalWarehouse, aiohttp_client: MakeClient) -> MakeService:
    async def make(**env: str) -> Client:
        settings = load_settings(
            {
                "DATABRICKS_HOST": warehouse.url,
                "DATABRICKS_HTTP_PATH": warehouse.http_path,
                "DATABRICKS_TOKEN": TOKEN,
                **env,
            },
            env_file=None,
        )
        app = create_app(settings, retry_policy=NO_WAIT, poll_schedule=FAST_POLL)
        return await aiohttp_client(app)

    return make


def executes(warehouse: LocalWarehouse) -> int:
    return sum(1 for r in warehouse.requests if r.endpoint == "execute")


def starts(warehouse: LocalWarehouse) -> int:
    return sum(1 for r in warehouse.requests if r.endpoint == "warehouse_start")


async def post(
    service: Client, sql: str = COUNT, path: str = "/api/query", **headers: str
) -> tuple[int, Any, Any]:
    body = {"sql": sql} if path == "/api/query" else {}
    response = await service.post(path, json=body, headers=headers)
    text = await response.read()
    return response.status, orjson.loads(text) if text else None, response.headers


def cache_of(headers: Any) -> str:
    return str(headers["Server-Timing"]).split("cache;desc=")[1].split(",")[0]


async def test_a_repeated_query_is_answered_from_the_cache(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()

    first = await post(service)
    second = await post(service, "select   COUNT(*) as n from range(10) -- again")

    assert first[0] == second[0] == 200
    assert first[1] == second[1]
    assert [cache_of(first[2]), cache_of(second[2])] == ["miss", "hit"]
    assert executes(warehouse) == 1
    assert second[2]["Cache-Control"].startswith("private, max-age=")
    assert "public" not in second[2]["Cache-Control"]
    assert second[2]["ETag"] == first[2]["ETag"]
    assert int(second[2]["Age"]) >= 0


async def test_if_none_match_gets_304_also_after_a_fresh_run(make_service: MakeService) -> None:
    service = await make_service()
    _, _, headers = await post(service)

    cached = await post(service, **{"If-None-Match": headers["ETag"]})
    fresh = await post(service, **{"If-None-Match": headers["ETag"], "Cache-Control": "no-cache"})

    assert (cached[0], cached[1]) == (304, None)
    assert (fresh[0], cache_of(fresh[2])) == (304, "miss")
    assert fresh[2]["ETag"] == headers["ETag"]


@pytest.mark.parametrize(
    ("control", "second", "runs"),
    [
        pytest.param("no-cache", "hit", 2, id="no-cache-runs-and-stores"),
        pytest.param("no-store", "miss", 3, id="no-store-runs-and-stores-nothing"),
        pytest.param("max-age=0", "hit", 2, id="max-age-0-runs-and-stores"),
    ],
)
async def test_request_cache_control(
    make_service: MakeService, warehouse: LocalWarehouse, control: str, second: str, runs: int
) -> None:
    service = await make_service()
    await post(service, **{"Cache-Control": "no-store"})

    told = await post(service, **{"Cache-Control": control})
    after = await post(service)

    assert cache_of(told[2]) in ("miss", "bypass")
    assert cache_of(after[2]) == second
    assert executes(warehouse) == runs


async def test_no_store_answers_say_no_store(make_service: MakeService) -> None:
    service = await make_service()

    _, _, headers = await post(service, **{"Cache-Control": "no-store"})

    assert headers["Cache-Control"] == "private, no-store"
    assert cache_of(headers) == "bypass"


async def test_only_if_cached_answers_504_not_cached_then_the_entry(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()

    empty = await post(service, **{"Cache-Control": "only-if-cached"})
    await post(service)
    filled = await post(service, **{"Cache-Control": "only-if-cached"})

    assert (empty[0], empty[1]["error"]["code"]) == (504, "NOT_CACHED")
    assert (filled[0], cache_of(filled[2])) == (200, "hit")
    assert executes(warehouse) == 1


async def test_a_malformed_cache_control_is_a_400_naming_it(make_service: MakeService) -> None:
    service = await make_service()

    status, body, _ = await post(service, **{"Cache-Control": "max-age=soon"})

    assert status == 400
    assert body["error"]["field"] == "Cache-Control"


async def test_a_non_deterministic_query_runs_every_time(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()

    answers = [await post(service, "SELECT random() AS r") for _ in range(2)]

    assert [cache_of(a[2]) for a in answers] == ["bypass", "bypass"]
    assert answers[0][2]["Cache-Control"] == "private, no-store"
    assert executes(warehouse) == 2


async def test_the_ttl_then_stale_while_revalidate(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service(CACHE_TTL_S="60", CACHE_STALE_S="30")
    clock = FakeClock(WALL_CLOCK_START)
    service.app[RESULT_CACHE].clock = clock
    await post(service)

    clock.now += 70  # expired, within the stale window
    stale = await post(service)
    for _ in range(200):  # bounded: the one background refresh lands
        if executes(warehouse) == 2 and not service.app[RESULT_CACHE].coalescer.in_flight_any():
            break
        await asyncio.sleep(0.01)
    refreshed = await post(service)

    assert (cache_of(stale[2]), stale[2]["Cache-Control"]) == ("stale", "private, max-age=0")
    assert int(stale[2]["Age"]) == 70
    assert cache_of(refreshed[2]) == "hit"
    assert executes(warehouse) == 2


async def test_identical_requests_in_flight_share_one_statement(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()
    sql = "SELECT sleep_ms(300) AS slept"

    answers = await asyncio.gather(*(post(service, sql) for _ in range(8)))

    assert [a[0] for a in answers] == [200] * 8
    assert sorted(cache_of(a[2]) for a in answers) == ["coalesced"] * 7 + ["miss"]
    assert executes(warehouse) == 1


async def test_uncached_requests_in_flight_are_coalesced_too(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()
    sql = "SELECT sleep_ms(300) AS slept"

    answers = await asyncio.gather(
        *(post(service, sql, **{"Cache-Control": "no-store"}) for _ in range(4))
    )

    assert sorted(cache_of(a[2]) for a in answers) == ["bypass"] + ["coalesced"] * 3
    assert executes(warehouse) == 1


async def test_a_waiter_past_its_deadline_gets_504_and_the_others_their_result(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()
    sql = "SELECT sleep_ms(1500) AS slept"

    async def run(timeout_s: float) -> int:
        response = await service.post("/api/query", json={"sql": sql, "timeout_s": timeout_s})
        return response.status

    statuses = await asyncio.gather(run(30), run(0.3))

    assert list(statuses) == [200, 504]
    assert executes(warehouse) == 1


async def test_a_failure_reaches_every_waiter_and_is_not_cached(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()
    sql = "SELECT sleep_ms(200), 1 / 0"

    answers = await asyncio.gather(*(post(service, sql) for _ in range(3)))
    again = await post(service, sql)

    assert [a[0] for a in answers] == [400, 400, 400]
    assert again[0] == 400
    assert executes(warehouse) == 2


async def test_a_stream_is_answered_from_a_fresh_entry(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()
    await post(service)

    response = await service.post(
        "/api/query", json={"sql": COUNT}, headers={"Accept": "application/x-ndjson"}
    )
    lines = (await response.read()).splitlines()

    assert response.status == 200
    assert cache_of(response.headers) == "hit"
    assert orjson.loads(lines[1]) == [10]
    footer = orjson.loads(lines[-1])
    assert (footer["row_count"], footer["truncated"]) == (1, False)
    assert "cache;desc=" in footer["server_timing"]
    assert executes(warehouse) == 1


async def test_a_stopped_warehouse_is_started_once_and_callers_get_503_with_the_eta(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    warehouse.stop()
    service = await make_service(WAREHOUSE_START_ESTIMATE_S="120")

    answers = await asyncio.gather(*(post(service) for _ in range(5)))

    assert [a[0] for a in answers] == [503] * 5
    error = answers[0][1]["error"]
    assert error["code"] == "WAREHOUSE_STARTING"
    assert error["retryable"] is True
    assert error["warehouse"]["state"] == "STARTING"
    assert error["warehouse"]["eta_s"] == 120
    assert answers[0][2]["Retry-After"] == "120"
    assert starts(warehouse) == 1
    assert executes(warehouse) == 0


async def test_without_auto_start_a_stopped_warehouse_is_503_warehouse_stopped(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    warehouse.stop()
    service = await make_service(WAREHOUSE_AUTO_START="false")

    status, body, _ = await post(service)

    assert (status, body["error"]["code"]) == (503, "WAREHOUSE_STOPPED")
    assert body["error"]["warehouse"]["state"] == "STOPPED"
    assert starts(warehouse) == 0


async def test_while_the_warehouse_starts_a_cached_result_answers_as_stale(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service(CACHE_TTL_S="60")
    clock = FakeClock(WALL_CLOCK_START)
    service.app[RESULT_CACHE].clock = clock
    await post(service)
    warehouse.stop()
    service.app[WAREHOUSE_TRACKER].doubt()  # as after a warehouse error
    clock.now += 600

    status, body, headers = await post(service)

    assert (status, body["rows"]) == (200, [[10]])
    assert cache_of(headers) == "stale"
    assert 'warehouse;desc="starting' in headers["Server-Timing"]
    assert starts(warehouse) == 1
    assert executes(warehouse) == 1


async def test_a_request_with_time_to_spare_waits_for_the_start(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    warehouse.stop()
    service = await make_service(WAREHOUSE_START_ESTIMATE_S="1")

    status, body, headers = await post(service)

    assert (status, body["rows"]) == (200, [[10]])
    assert cache_of(headers) == "miss"
    assert starts(warehouse) == 1


async def test_ready_reports_the_warehouse_without_starting_it(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    warehouse.stop()
    service = await make_service()

    response = await service.get("/ready")
    body = await response.json()

    assert response.status == 200
    assert body["warehouse"] == {"state": "STOPPED", "eta_s": 120}
    assert starts(warehouse) == 0
    assert executes(warehouse) == 0
    assert warehouse.state == "STOPPED"


async def test_named_queries_carry_their_own_cache_policy(
    make_service: MakeService, warehouse: LocalWarehouse, tmp_path: Path
) -> None:
    (tmp_path / "off.sql").write_text("-- cache: off\nSELECT 1 AS one\n")
    (tmp_path / "long.sql").write_text("-- cache: ttl=300 stale=60\nSELECT 2 AS two\n")
    (tmp_path / "plain.sql").write_text("SELECT 3 AS three\n")
    service = await make_service(QUERIES_DIR=str(tmp_path))

    listed = await (await service.get("/api/queries")).json()
    off = [await post(service, path="/api/queries/off") for _ in range(2)]
    long = [await post(service, path="/api/queries/long") for _ in range(2)]

    policies = {q["name"]: q["cache"] for q in listed["queries"]}
    assert policies == {
        "off": {"ttl_s": 0, "stale_s": 0},
        "long": {"ttl_s": 300, "stale_s": 60},
        "plain": None,
    }
    assert [cache_of(a[2]) for a in off] == ["bypass", "bypass"]
    assert [cache_of(a[2]) for a in long] == ["miss", "hit"]
    assert long[1][2]["Cache-Control"].startswith("private, max-age=29")


async def test_the_access_log_and_metrics_say_how_it_was_answered(
    make_service: MakeService,
) -> None:
    service = await make_service()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("dbx_backend.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        await post(service)
        await post(service)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    metrics = await (await service.get("/metrics")).text()

    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["cache"] for line in lines if line["route"] == "/api/query"] == ["miss", "hit"]
    assert 'dbx_cache_answers_total{result="hit"} 1.0' in metrics
    assert 'dbx_cache_answers_total{result="miss"} 1.0' in metrics
    assert 'dbx_warehouse_state{state="RUNNING"} 1.0' in metrics


async def test_cors_exposes_and_allows_the_cache_headers(make_service: MakeService) -> None:
    service = await make_service()

    preflight = await service.options(
        "/api/query",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "cache-control, if-none-match, content-type",
        },
    )
    answer = await service.post(
        "/api/query", json={"sql": COUNT}, headers={"Origin": "http://localhost:3000"}
    )

    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert preflight.status == 200
    assert "cache-control" in allowed
    assert "if-none-match" in allowed
    exposed = answer.headers["Access-Control-Expose-Headers"].lower()
    assert {"etag", "age", "server-timing"} <= {h.strip() for h in exposed.split(",")}


async def test_with_per_key_scope_each_caller_reads_its_own_entries(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service(API_KEYS="key-one,key-two", CACHE_SCOPE="per_key")
    one = {"Authorization": "Bearer key-one"}
    two = {"Authorization": "Bearer key-two"}

    first = await post(service, **one)
    other = await post(service, **two)
    again = await post(service, **one)

    assert [cache_of(a[2]) for a in (first, other, again)] == ["miss", "miss", "hit"]
    assert executes(warehouse) == 2


async def test_a_statement_the_gate_refuses_is_refused_every_time(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()

    answers = [await post(service, "DELETE FROM samples.tpch.orders") for _ in range(3)]

    assert [(a[0], a[1]["error"]["code"]) for a in answers] == [(403, "STATEMENT_NOT_ALLOWED")] * 3
    assert executes(warehouse) == 0


async def test_a_repeated_body_is_answered_as_the_first_was_whatever_else_changes(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()
    body = b'{"sql": "SELECT 5 AS five", "timeout_s": 30}'
    json = {"Content-Type": "application/json"}

    first = await service.post("/api/query", data=body, headers=json)
    wrong_type = await service.post("/api/query", data=body, headers={"Content-Type": "text/plain"})
    streamed = await service.post(
        "/api/query",
        data=body,
        headers={"Content-Type": "application/json", "Accept": "application/x-ndjson"},
    )

    assert (first.status, (await first.json())["rows"]) == (200, [[5]])
    assert wrong_type.status == 400
    assert (streamed.status, cache_of(streamed.headers)) == (200, "hit")
    assert executes(warehouse) == 1


NDJSON = {"Accept": "application/x-ndjson"}
CSV = {"Accept": "text/csv"}


async def stream(
    service: Client, sql: str, headers: dict[str, str] = NDJSON
) -> tuple[int, list[Any], Any]:
    """A streamed answer: status, its NDJSON lines (CSV: its text lines), headers."""
    response = await service.post("/api/query", json={"sql": sql}, headers=headers)
    text = await response.read()
    if headers is CSV:
        return response.status, text.decode().splitlines(), response.headers
    return response.status, [orjson.loads(line) for line in text.splitlines()], response.headers


async def test_identical_streams_in_flight_share_one_statement(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()
    sql = "SELECT sleep_ms(300) AS slept, id FROM range(5) t(id)"

    answers = await asyncio.gather(*(stream(service, sql) for _ in range(4)))

    assert [a[0] for a in answers] == [200] * 4
    assert all(a[1][1:-1] == [[300, i] for i in range(5)] for a in answers)
    assert sorted(cache_of(a[2]) for a in answers) == ["coalesced"] * 3 + ["miss"]
    assert executes(warehouse) == 1


async def test_a_stream_and_a_buffered_request_in_flight_share_one_statement(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()
    sql = "SELECT sleep_ms(300) AS slept, 7 AS answer"

    streamed, buffered = await asyncio.gather(stream(service, sql), post(service, sql))

    assert streamed[1][1:-1] == buffered[1]["rows"] == [[300, 7]]
    assert sorted([cache_of(streamed[2]), cache_of(buffered[2])]) == ["coalesced", "miss"]
    assert executes(warehouse) == 1


async def test_a_streamed_result_is_stored_and_answers_every_format(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()
    sql = "SELECT id, id * 2 AS twice FROM range(3) t(id)"

    first = await stream(service, sql)
    buffered = await post(service, sql)
    again = await stream(service, sql)
    csv = await stream(service, sql, CSV)

    assert (cache_of(first[2]), first[2]["Cache-Control"]) == ("miss", "private, no-store")
    assert [cache_of(a[2]) for a in (buffered, again, csv)] == ["hit", "hit", "hit"]
    assert buffered[1]["rows"] == first[1][1:-1] == again[1][1:-1] == [[0, 0], [1, 2], [2, 4]]
    assert again[1][0]["columns"] == first[1][0]["columns"]
    assert again[1][0]["statement_id"] == first[1][0]["statement_id"]
    assert csv[1] == ["id,twice", "0,0", "1,2", "2,4"]
    assert executes(warehouse) == 1


async def test_a_stream_too_large_to_keep_is_not_stored_and_others_run_their_own(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service(CACHE_MAX_ENTRY_BYTES="1000")
    sql = "SELECT sleep_ms(300) AS slept, id FROM range(500) t(id)"

    answers = await asyncio.gather(*(stream(service, sql) for _ in range(3)))
    later = await stream(service, sql)

    for status, lines, _ in [*answers, later]:
        assert status == 200
        assert [row[1] for row in lines[1:-1]] == list(range(500))
        assert lines[-1]["row_count"] == 500
    assert cache_of(later[2]) == "miss"
    assert executes(warehouse) == 4
    budget = service.app[QUERY_SERVICE].memory
    for _ in range(100):  # bounded: each handler lets go once its last byte left
        if (budget.reserved, budget.cached) == (0, 0):
            break
        await asyncio.sleep(0.01)
    assert (budget.reserved, budget.cached) == (0, 0)  # the copies gave their bytes back


async def test_hits_in_a_stream_format_are_made_once_per_entry(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service()
    await post(service)
    store = service.app[SHARED_STATE].store  # type: ignore[attr-defined]
    held = store.stats.bytes_held

    first = await stream(service, COUNT)
    kept = store.stats.bytes_held
    second = await stream(service, COUNT)

    assert [cache_of(first[2]), cache_of(second[2])] == ["hit", "hit"]
    assert first[1][:-1] == second[1][:-1]
    assert kept > held  # the NDJSON body is kept beside its entry
    assert store.stats.bytes_held == kept  # and not made again


async def test_a_stale_stream_is_answered_at_once_and_refreshed_in_the_background(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    service = await make_service(CACHE_TTL_S="60", CACHE_STALE_S="30")
    clock = FakeClock(WALL_CLOCK_START)
    service.app[RESULT_CACHE].clock = clock
    await stream(service, COUNT)

    clock.now += 70  # expired, within the stale window
    stale = await stream(service, COUNT)
    for _ in range(200):  # bounded: the one background refresh lands
        if executes(warehouse) == 2 and not service.app[RESULT_CACHE].coalescer.in_flight_any():
            break
        await asyncio.sleep(0.01)
    refreshed = await stream(service, COUNT)

    assert (cache_of(stale[2]), stale[1][1]) == ("stale", [10])
    assert (cache_of(refreshed[2]), refreshed[1][1]) == ("hit", [10])
    assert executes(warehouse) == 2


async def test_a_statement_submitted_while_the_warehouse_starts_is_accepted_and_pending(
    local_warehouse: StartLocalWarehouse, aiohttp_client: MakeClient
) -> None:
    starting = await local_warehouse(
        token=TOKEN, start_stopped=True, start_s=60, wait_timeout_scale=0.02
    )
    settings = load_settings(
        {
            "DATABRICKS_HOST": starting.url,
            "DATABRICKS_HTTP_PATH": starting.http_path,
            "DATABRICKS_TOKEN": TOKEN,
        },
        env_file=None,
    )
    service = await aiohttp_client(
        create_app(settings, retry_policy=NO_WAIT, poll_schedule=FAST_POLL)
    )

    submitted = await service.post("/api/statements", json={"sql": COUNT})
    body = await submitted.json()
    polled = await (await service.get(f"/api/statements/{body['statement_id']}")).json()

    assert (submitted.status, body["state"]) == (202, "PENDING")
    assert polled["state"] == "PENDING"
    assert starting.state == "STARTING"  # the statement started it, as on Databricks


async def test_an_arrow_stream_shares_its_statement_and_its_copy_answers_json(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    import pyarrow as pa

    service = await make_service()
    sql = "SELECT sleep_ms(300) AS slept, id FROM range(3) t(id)"
    arrow = {"Accept": "application/vnd.apache.arrow.stream"}

    async def arrow_rows() -> tuple[list[dict[str, Any]], str]:
        response = await service.post("/api/query", json={"sql": sql}, headers=arrow)
        table = pa.ipc.open_stream(await response.read()).read_all()
        return table.to_pylist(), cache_of(response.headers)

    (rows, arrow_cache), buffered = await asyncio.gather(arrow_rows(), post(service, sql))
    later = await post(service, sql)

    assert rows == [{"slept": 300, "id": i} for i in range(3)]
    assert buffered[1]["rows"] == [[300, 0], [300, 1], [300, 2]]
    assert sorted([arrow_cache, cache_of(buffered[2])]) == ["coalesced", "miss"]
    assert cache_of(later[2]) == "hit"
    assert executes(warehouse) == 1


async def test_a_result_streamed_as_arrow_is_stored_for_the_other_formats(
    make_service: MakeService, warehouse: LocalWarehouse
) -> None:
    import pyarrow as pa

    service = await make_service()
    sql = "SELECT id, CAST(id AS DECIMAL(5,2)) AS d, 'x' || id AS s FROM range(3) t(id)"

    streamed = await service.post(
        "/api/query", json={"sql": sql}, headers={"Accept": "application/vnd.apache.arrow.stream"}
    )
    table = pa.ipc.open_stream(await streamed.read()).read_all()
    buffered = await post(service, sql)
    lines = await stream(service, sql)

    assert cache_of(streamed.headers) == "miss"
    assert table.num_rows == 3
    assert (cache_of(buffered[2]), cache_of(lines[2])) == ("hit", "hit")
    assert buffered[1]["rows"] == [[0, "0.00", "x0"], [1, "1.00", "x1"], [2, "2.00", "x2"]]
    assert lines[1][1:-1] == buffered[1]["rows"]
    assert executes(warehouse) == 1
