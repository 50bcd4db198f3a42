"""The memory budget end to end: the service over loopback HTTP against the local warehouse,
with a budget of 1 MiB so a few hundred kilobytes of answers fill it."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from dbx_backend.keys import MEMORY_BUDGET
from dbx_backend.localwarehouse import LocalWarehouse
from dbx_backend.logs import JsonFormatter
from tests.conftest import Client, StartLocalWarehouse, StartService, warehouse_settings

BUDGET = {"MEMORY_BUDGET_MB": "1"}
MIB = 1024 * 1024
# What the service does just after a response's last byte (releasing its reservation,
# sending a cancel in the background) or before it waits: looked for this often, this long.
SETTLE_STEP_S = 0.005
SETTLE_STEPS = 2000


def padded(tag: int, rows: int, width: int = 100) -> str:
    """A statement of its own (`tag`) whose answer is about `rows * (width + 12)` bytes."""
    source = f"range({rows}) AS t(id) WHERE id <> -1 - {tag}"
    return f"SELECT id, repeat('x', {width}) AS pad FROM {source}"  # noqa: S608 - numbers only


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    return await local_warehouse(chunk_rows=500)  # answers of several chunks


async def start(start_service: StartService, warehouse: LocalWarehouse, **env: str) -> Client:
    return await start_service(warehouse_settings(warehouse, **{**BUDGET, **env}))


async def post(service: Client, sql: str, **body: Any) -> tuple[int, dict[str, str], Any]:
    response = await service.post("/api/query", json={"sql": sql, **body})
    return response.status, dict(response.headers), orjson.loads(await response.read())


async def settle(done: Callable[[], bool]) -> None:
    for _ in range(SETTLE_STEPS):
        if done():
            return
        await asyncio.sleep(SETTLE_STEP_S)


def cancels(warehouse: LocalWarehouse) -> list[str]:
    return [r.path for r in warehouse.requests if r.endpoint == "cancel"]


@contextmanager
def access_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("dbx_backend.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_concurrent_answers_stay_within_the_budget_and_each_gets_200_or_503(
    start_service: StartService, warehouse: LocalWarehouse
) -> None:
    service = await start(start_service, warehouse, MEMORY_WAIT_S="0.5", CACHE_TTL_S="0")
    budget = service.app[MEMORY_BUDGET]
    highest, running = 0, True

    async def watch() -> None:
        nonlocal highest
        while running:
            highest = max(highest, budget.reserved + budget.cached)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        answers = await asyncio.gather(*(post(service, padded(i, 3_000)) for i in range(12)))
    finally:
        running = False
        await watcher

    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) <= {200, 503}
    assert statuses[0] == 200
    for status, headers, body in answers:
        if status == 200:
            assert body["row_count"] == 3_000
            assert body["truncated"] is False
        else:
            assert body["error"]["code"] == "SERVICE_BUSY"
            assert body["error"]["retryable"] is True
            assert int(headers["Retry-After"]) >= 1
    assert budget.stats.waits > 0  # the answers did not all fit at once: they took turns
    assert highest <= budget.total
    await settle(lambda: budget.reserved == 0)
    assert budget.reserved == 0


async def test_a_request_without_room_gets_503_and_its_statement_is_cancelled(
    start_service: StartService, warehouse: LocalWarehouse
) -> None:
    service = await start(start_service, warehouse, MEMORY_WAIT_S="0.05")
    budget = service.app[MEMORY_BUDGET]
    held = await budget.reserve(budget.total)  # the budget is full: nothing is released

    with access_log() as log:
        status, headers, body = await post(service, padded(1, 100))
    await settle(lambda: bool(cancels(warehouse)))
    held.release()

    assert status == 503
    assert headers["Retry-After"] == "2"
    error = body["error"]
    assert error["code"] == "SERVICE_BUSY"
    assert error["retryable"] is True
    assert "NDJSON" in error["message"]
    assert cancels(warehouse) == [f"/api/2.0/sql/statements/{error['statement_id']}/cancel"]
    line = orjson.loads(log.getvalue().splitlines()[-1])
    assert line["status"] == 503
    assert line["memory_wait_ms"] >= 50
    metrics = await (await service.get("/metrics")).text()
    assert metric(metrics, "dbx_memory_refusals_total") == 1
    assert metric(metrics, "dbx_memory_waits_total") == 1
    assert metric(metrics, "dbx_memory_budget_bytes") == MIB


async def test_the_access_log_says_when_a_request_waited_for_memory(
    start_service: StartService, warehouse: LocalWarehouse
) -> None:
    service = await start(start_service, warehouse, MEMORY_WAIT_S="30")
    budget = service.app[MEMORY_BUDGET]
    held = await budget.reserve(budget.total)

    with access_log() as log:
        request = asyncio.create_task(post(service, padded(1, 100)))
        await settle(lambda: budget.waiting)
        assert budget.waiting
        held.release()
        status, _, _ = await request

    lines = [orjson.loads(line) for line in log.getvalue().splitlines()]
    assert status == 200
    assert lines[-1]["memory_wait_ms"] > 0
    assert "memory_wait=" in lines[-1]["message"]


async def test_the_cache_gives_way_to_answers(
    start_service: StartService, warehouse: LocalWarehouse
) -> None:
    service = await start(start_service, warehouse, MEMORY_WAIT_S="0.05")
    budget = service.app[MEMORY_BUDGET]
    first = padded(1, 3_000)  # about 350 KB

    status, headers, _ = await post(service, first)
    assert (status, headers["Server-Timing"].split("cache;desc=")[1]) == (200, "miss")
    await settle(lambda: budget.reserved == 0)
    assert budget.cached > 300_000

    # About 800 KB: it fits only if the cached answer leaves.
    status, _, body = await post(service, padded(2, 7_000))
    assert status == 200
    assert body["row_count"] == 7_000

    status, headers, _ = await post(service, first)
    assert status == 200
    assert "cache;desc=miss" in headers["Server-Timing"]  # it was evicted
    metrics = await (await service.get("/metrics")).text()
    assert metric(metrics, "dbx_cache_evictions") >= 1
    assert metric(metrics, "dbx_memory_refusals_total") == 0


async def test_an_answer_larger_than_its_estimate_grows_its_reservation(
    start_service: StartService, warehouse: LocalWarehouse
) -> None:
    service = await start(start_service, warehouse, CACHE_TTL_S="0")
    budget = service.app[MEMORY_BUDGET]
    # INLINE manifests carry no byte count: 1 value per row is estimated at a few bytes, and
    # each of these is 2,000.
    sql = "SELECT repeat('x', 2000) AS pad FROM range(200)"
    highest, running = 0, True

    async def watch() -> None:
        nonlocal highest
        while running:
            highest = max(highest, budget.reserved)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        status, _, body = await post(service, sql)
    finally:
        running = False
        await watcher

    assert status == 200
    assert body["row_count"] == 200
    assert budget.stats.growths >= 1
    assert highest >= 200 * 2_000


async def test_an_answer_that_cannot_grow_gets_503(
    start_service: StartService, warehouse: LocalWarehouse
) -> None:
    service = await start(start_service, warehouse, MEMORY_WAIT_S="0.05", CACHE_TTL_S="0")
    budget = service.app[MEMORY_BUDGET]
    held = await budget.reserve(budget.total - 100_000)

    status, headers, body = await post(service, "SELECT repeat('x', 2000) AS pad FROM range(200)")
    held.release()

    assert status == 503
    assert body["error"]["code"] == "SERVICE_BUSY"
    assert "Retry-After" in headers
    await settle(lambda: budget.reserved == 0)
    assert budget.reserved == 0


async def test_an_answer_larger_than_the_whole_budget_is_truncated_at_it(
    start_service: StartService, warehouse: LocalWarehouse
) -> None:
    service = await start(start_service, warehouse)
    budget = service.app[MEMORY_BUDGET]

    response = await service.post("/api/query", json={"sql": padded(1, 30_000)})
    raw = await response.read()  # about 3.4 MB whole
    body = orjson.loads(raw)

    assert response.status == 200
    assert body["truncated"] is True
    assert 0 < body["row_count"] == len(body["rows"]) < 30_000
    assert body["rows"][-1][0] == body["row_count"] - 1
    assert len(raw) <= MIB
    assert "no-store" in response.headers["Cache-Control"]  # a cut answer is never cached
    assert budget.stats.truncations == 1
    metrics = await (await service.get("/metrics")).text()
    assert metric(metrics, "dbx_memory_truncations_total") == 1


async def test_a_stream_holds_its_window_in_the_budget_until_it_ends(
    start_service: StartService, warehouse: LocalWarehouse
) -> None:
    service = await start(start_service, warehouse)
    budget = service.app[MEMORY_BUDGET]

    response = await service.post(
        "/api/query",
        json={"sql": padded(1, 5_000)},
        headers={"Accept": "application/x-ndjson"},
    )
    first_line = await response.content.readline()
    held = budget.reserved
    rest = await response.read()
    await settle(lambda: budget.reserved == 0)

    assert b'"columns"' in first_line
    assert orjson.loads(rest.splitlines()[-1])["row_count"] == 5_000
    assert 0 < held < 5_000 * 112  # a window of chunks, not the whole result
    assert budget.reserved == 0


@pytest.mark.parametrize(
    ("disposition", "links_format"),
    [
        ("INLINE", "ARROW_STREAM"),
        ("EXTERNAL_LINKS", "JSON_ARRAY"),
        ("EXTERNAL_LINKS", "ARROW_STREAM"),
    ],
    ids=["inline", "links-json", "links-arrow"],
)
async def test_the_answer_is_the_same_bytes_whatever_the_chunks(
    start_service: StartService,
    warehouse: LocalWarehouse,
    disposition: str,
    links_format: str,
) -> None:
    sql = (
        "SELECT id, CAST(id AS DOUBLE) * 1.5 AS dbl, CAST(id / 100 AS DECIMAL(18,2)) AS dec,"
        " concat('row-', id) AS str,"
        " CAST(date_add(DATE'2020-01-01', CAST(id % 1000 AS INT)) AS DATE) AS dt,"
        " timestampadd(SECOND, id, TIMESTAMP'2020-01-01 00:00:00') AS ts, id % 2 = 0 AS flag,"
        " CASE WHEN id % 3 = 0 THEN NULL ELSE id END AS maybe FROM range(2000) AS t(id)"
    )
    reference = await start(start_service, warehouse, CACHE_TTL_S="0")
    service = await start(
        start_service, warehouse, CACHE_TTL_S="0", EXTERNAL_LINKS_FORMAT=links_format
    )

    expected = await (await reference.post("/api/query", json={"sql": sql})).read()
    response = await service.post("/api/query", json={"sql": sql, "disposition": disposition})
    body = await response.read()

    def without_id(raw: bytes) -> bytes:
        return raw[: raw.rindex(b',"statement_id":')]

    assert response.status == 200
    assert without_id(body) == without_id(expected)
    assert orjson.loads(body)["row_count"] == 2_000


async def submitted(service: Client, sql: str) -> str:
    """A statement submitted through `/api/statements`, ended: its handle."""
    response = await service.post("/api/statements", json={"sql": sql, "wait_s": 10})
    body = orjson.loads(await response.read())
    assert (response.status, body["state"]) == (202, "SUCCEEDED")
    return str(body["statement_id"])


@pytest.mark.parametrize(
    ("page", "rows_read"),
    [
        pytest.param("/api/statements/{}?limit=2000", 500, id="first-page"),  # its first chunk
        pytest.param("/api/statements/{}/rows?offset=1000&limit=2000", 2_000, id="rows"),
    ],
)
async def test_a_page_without_room_gets_503_and_its_statement_stays_readable(
    start_service: StartService, warehouse: LocalWarehouse, page: str, rows_read: int
) -> None:
    service = await start(start_service, warehouse, MEMORY_WAIT_S="0.05")
    budget = service.app[MEMORY_BUDGET]
    handle = await submitted(service, padded(1, 3_000))
    held = await budget.reserve(budget.total)

    with access_log() as log:
        refused = await service.get(page.format(handle))
        body = orjson.loads(await refused.read())
    held.release()
    again = await service.get(page.format(handle))
    rows = orjson.loads(await again.read())["rows"]

    assert refused.status == 503
    assert refused.headers["Retry-After"] == "2"
    assert body["error"]["code"] == "SERVICE_BUSY"
    assert body["error"]["retryable"] is True
    assert "statement_id" not in body["error"]  # a handle's raw statement id stays hidden
    assert orjson.loads(log.getvalue().splitlines()[-1])["memory_wait_ms"] >= 50
    assert budget.stats.refusals == 1
    assert cancels(warehouse) == []
    assert again.status == 200
    assert len(rows) == rows_read
    assert budget.reserved == 0  # the page's reservation went with its body


async def test_a_page_holds_its_body_in_the_budget_while_it_is_read_and_sent(
    start_service: StartService, warehouse: LocalWarehouse
) -> None:
    service = await start(start_service, warehouse, MEMORY_WAIT_S="30")
    budget = service.app[MEMORY_BUDGET]
    handle = await submitted(service, padded(2, 3_000))
    held = await budget.reserve(budget.total - 64 * 1024)  # room for a small page only
    highest = 0

    async def watch() -> None:
        nonlocal highest
        while True:
            highest = max(highest, budget.reserved - held.nbytes)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        page = asyncio.create_task(service.get(f"/api/statements/{handle}/rows?limit=3000"))
        await settle(lambda: budget.waiting)
        waited = budget.waiting  # a 3,000-row page (about 300 KB) does not fit in 64 KiB
        held.release()
        response = await page
        body = orjson.loads(await response.read())
    finally:
        watcher.cancel()

    assert waited
    assert response.status == 200
    assert body["row_count"] == 3_000
    assert highest >= len(orjson.dumps(body["rows"])) // 2  # it reserved about its body
    await settle(lambda: budget.reserved == 0)
    assert budget.reserved == 0


async def raw_exchange(service: Client, request: bytes) -> bytes:
    """`request` sent on a connection of its own; every byte the service answers until it
    closes the connection (the request asks it to)."""
    reader, writer = await asyncio.open_connection(service.host, service.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(30):
            return await reader.read(-1)
    finally:
        writer.close()


async def test_a_head_request_for_a_large_page_gets_its_headers_and_no_body(
    start_service: StartService, warehouse: LocalWarehouse
) -> None:
    service = await start(start_service, warehouse, MEMORY_WAIT_S="30")
    budget = service.app[MEMORY_BUDGET]
    handle = await submitted(service, padded(3, 3_000))  # a page of about 300 KB
    page = f"/api/statements/{handle}/rows?limit=3000"
    got = await service.get(page)
    body = await got.read()

    answer = await raw_exchange(
        service, f"HEAD {page} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )

    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"Content-Length: {len(body)}".encode() in head.split(b"\r\n")
    assert rest == b""  # a HEAD answer has no body: bytes here would be read as the next answer
    await settle(lambda: budget.reserved == 0)
    assert budget.reserved == 0
