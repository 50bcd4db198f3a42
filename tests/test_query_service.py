"""The query service: submit, poll, chunks, terminal states, deadline and cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from dbx_backend.config import Settings
from dbx_backend.engine.parameters import InvalidQuery, TypedParam, to_statement_parameters
from dbx_backend.engine.query_service import QueryOptions, QueryService, choose_wait_timeout
from dbx_backend.warehouse import errors as dbx
from dbx_backend.warehouse.client import WarehouseClient
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import TEST_HOST, FakeClock

STATEMENTS = f"{TEST_HOST}/api/2.0/sql/statements"
SID = "01f0-stmt"
STATUS = f"{STATEMENTS}/{SID}"
CANCEL = f"{STATUS}/cancel"
SCHEMA = {
    "column_count": 2,
    "columns": [
        {"name": "id", "position": 0, "type_name": "LONG", "type_text": "BIGINT"},
        {"name": "name", "position": 1, "type_name": "STRING", "type_text": "STRING"},
    ],
}


def succeeded(
    rows: list[list[str | None]],
    *,
    total: int | None = None,
    next_link: str | None = None,
    truncated: bool = False,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "chunk_index": 0,
        "row_offset": 0,
        "row_count": len(rows),
        "data_array": rows,
    }
    if next_link:
        result["next_chunk_index"] = 1
        result["next_chunk_internal_link"] = next_link
    return {
        "statement_id": SID,
        "status": {"state": "SUCCEEDED"},
        "manifest": {
            "format": "JSON_ARRAY",
            "schema": SCHEMA,
            "total_row_count": len(rows) if total is None else total,
            "truncated": truncated,
        },
        "result": result,
    }


def state(name: str, **status: Any) -> dict[str, Any]:
    return {"statement_id": SID, "status": {"state": name, **status}}


def count(mock: aioresponses, method: str, url: str) -> int:
    return len(mock.requests.get((method, URL(url)), []))


@pytest.fixture
async def service(settings: Settings, clock: FakeClock) -> AsyncIterator[QueryService]:
    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        yield QueryService(client, sleep=clock.sleep, clock=clock)


async def test_an_immediately_succeeded_statement_returns_typed_rows(
    service: QueryService, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=succeeded([["1", "a"], ["9223372036854775807", ""]]))

    result = await service.execute_query("SELECT 1")

    assert [c.name for c in result.columns] == ["id", "name"]
    assert result.rows == [[1, "a"], [9223372036854775807, ""]]
    assert result.statement_id == SID
    assert result.truncated is False
    assert count(mocked, "GET", STATUS) == 0


async def test_pending_then_running_then_succeeded_is_polled(
    service: QueryService, mocked: aioresponses, clock: FakeClock
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=state("RUNNING"))
    mocked.get(STATUS, payload=state("SOME_NEW_STATE"))
    mocked.get(STATUS, payload=succeeded([["7", "x"]]))

    result = await service.execute_query("SELECT 7")

    assert result.rows == [[7, "x"]]
    assert count(mocked, "GET", STATUS) == 3
    assert clock.sleeps == sorted(clock.sleeps)  # the interval grows
    assert clock.sleeps[0] < clock.sleeps[-1]


async def test_three_chunks_are_read_in_order_following_internal_links(
    service: QueryService, mocked: aioresponses
) -> None:
    link1 = f"/api/2.0/sql/statements/{SID}/result/chunks/1?row_offset=2"
    link2 = f"/api/2.0/sql/statements/{SID}/result/chunks/2?row_offset=3"
    mocked.post(STATEMENTS, payload=succeeded([["1", "a"], ["2", "b"]], total=5, next_link=link1))
    mocked.get(
        TEST_HOST + link1,
        payload={
            "chunk_index": 1,
            "row_offset": 2,
            "data_array": [["3", "c"]],
            "next_chunk_index": 2,
            "next_chunk_internal_link": link2,
        },
    )
    mocked.get(
        TEST_HOST + link2,
        payload={"chunk_index": 2, "row_offset": 3, "data_array": [["4", "d"], ["5", None]]},
    )

    result = await service.execute_query("SELECT *")

    assert [row[0] for row in result.rows] == [1, 2, 3, 4, 5]
    assert result.rows[-1] == [5, None]
    assert count(mocked, "GET", TEST_HOST + link1) == 1
    assert count(mocked, "GET", TEST_HOST + link2) == 1


async def test_a_chunk_with_a_wrong_row_offset_is_refused(
    service: QueryService, mocked: aioresponses
) -> None:
    link = f"/api/2.0/sql/statements/{SID}/result/chunks/1"
    mocked.post(STATEMENTS, payload=succeeded([["1", "a"]], total=2, next_link=link))
    mocked.get(
        TEST_HOST + link, payload={"chunk_index": 1, "row_offset": 5, "data_array": [["2", "b"]]}
    )

    with pytest.raises(dbx.ProtocolError, match="expected 1"):
        await service.execute_query("SELECT *")


async def test_fewer_rows_than_announced_is_refused(
    service: QueryService, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=succeeded([["1", "a"]], total=3))

    with pytest.raises(dbx.ProtocolError, match="announced 3"):
        await service.execute_query("SELECT *")


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        pytest.param([[1, "a"]], "column 'id'", id="a-number-where-text-is-sent"),
        pytest.param([["1", 2]], "column 'name'", id="a-number-in-a-text-column"),
        pytest.param([["1", ["a"]]], "column 'name'", id="an-array-in-a-text-column"),
        pytest.param([{"id": "1"}], "row 0", id="a-row-that-is-an-object"),
        pytest.param(["1a"], "row 0", id="a-row-that-is-text"),
        pytest.param([["1"]], "row 0", id="a-row-too-short"),
    ],
)
async def test_inline_rows_that_are_not_arrays_of_text_are_refused(
    service: QueryService, mocked: aioresponses, rows: list[Any], problem: str
) -> None:
    """The wire model leaves each cell to the normalizer, which checks what it converts."""
    mocked.post(STATEMENTS, payload=succeeded(rows))

    with pytest.raises(dbx.ProtocolError, match=problem):
        await service.execute_query("SELECT *")


@pytest.mark.parametrize(
    ("message", "sql_state"),
    [
        pytest.param(
            "[PARSE_SYNTAX_ERROR] Syntax error at or near 'FORM'. SQLSTATE: 42601",
            "42601",
            id="parse",
        ),
        pytest.param(
            "[TABLE_OR_VIEW_NOT_FOUND] The table or view `nope` cannot be found.",
            "42P01",
            id="no-table",
        ),
        pytest.param(
            "[UNBOUND_SQL_PARAMETER] Found the unbound parameter: zip.", "42P02", id="unbound"
        ),
    ],
)
async def test_a_failed_statement_raises_the_sql_error(
    service: QueryService, mocked: aioresponses, message: str, sql_state: str
) -> None:
    mocked.post(
        STATEMENTS,
        payload=state(
            "FAILED", error={"error_code": "BAD_REQUEST", "message": message}, sql_state=sql_state
        ),
    )

    with pytest.raises(dbx.StatementFailed) as caught:
        await service.execute_query("SELECT")

    assert caught.value.message == message
    assert caught.value.sql_state == sql_state
    assert caught.value.statement_id == SID


async def test_a_cancel_we_did_not_ask_for_is_an_upstream_error(
    service: QueryService, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("RUNNING"))
    mocked.get(STATUS, payload=state("CANCELED"))

    with pytest.raises(dbx.StatementCanceled):
        await service.execute_query("SELECT 1")


async def test_closed_without_a_result_is_a_clear_error(
    service: QueryService, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("CLOSED"))

    with pytest.raises(dbx.StatementClosed, match="no longer available"):
        await service.execute_query("SELECT 1")


async def test_closed_that_still_carries_its_result_is_a_success(
    service: QueryService, mocked: aioresponses
) -> None:
    body = succeeded([["1", "a"]])
    body["status"]["state"] = "CLOSED"
    mocked.post(STATEMENTS, payload=body)

    result = await service.execute_query("SELECT 1")

    assert result.rows == [[1, "a"]]


async def test_the_deadline_mid_poll_cancels_the_statement(
    service: QueryService, mocked: aioresponses, clock: FakeClock
) -> None:
    mocked.post(STATEMENTS, payload=state("RUNNING"))
    mocked.get(STATUS, payload=state("RUNNING"), repeat=True)
    mocked.post(CANCEL, body="")

    with pytest.raises(dbx.StatementTimedOut) as caught:
        await service.execute_query("SELECT slow", options=QueryOptions(timeout_s=3))
    await service.drain()  # the cancel goes out in the background, not before the answer

    assert caught.value.statement_id == SID
    assert count(mocked, "POST", CANCEL) == 1
    assert sum(clock.sleeps) == pytest.approx(3)


async def test_a_warehouse_call_failing_once_the_deadline_passed_is_a_timeout(
    service: QueryService, mocked: aioresponses, clock: FakeClock
) -> None:
    mocked.post(STATEMENTS, payload=state("RUNNING"))

    def slow_poll_timing_out(url: URL, **kwargs: Any) -> None:
        clock.now += 5  # the call's own timeout, cut to the deadline, used up the rest of it
        raise aiohttp.ServerTimeoutError("timed out")

    mocked.get(STATUS, callback=slow_poll_timing_out, repeat=True)
    mocked.post(CANCEL, body="")

    with pytest.raises(dbx.StatementTimedOut) as caught:
        await service.execute_query("SELECT slow", options=QueryOptions(timeout_s=3))
    await service.drain()

    assert caught.value.statement_id == SID
    assert count(mocked, "POST", CANCEL) == 1


async def test_a_caller_that_goes_away_cancels_the_statement(
    service: QueryService, mocked: aioresponses, clock: FakeClock
) -> None:
    polled = asyncio.Event()

    async def sleep_then_hang(seconds: float) -> None:
        polled.set()
        await asyncio.Event().wait()

    service.sleep = sleep_then_hang
    mocked.post(STATEMENTS, payload=state("RUNNING"))
    mocked.post(CANCEL, body="")
    task = asyncio.create_task(service.execute_query("SELECT slow"))
    await asyncio.wait_for(polled.wait(), 5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await service.drain()

    assert count(mocked, "POST", CANCEL) == 1


async def test_a_submit_abandoned_by_several_callers_gets_one_cancel(
    service: QueryService, mocked: aioresponses
) -> None:
    mocked.post(CANCEL, body="", repeat=True)
    submit: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    for _ in range(3):  # e.g. duplicates of one Idempotency-Key, all interrupted at shutdown
        service.cancel_when_started(submit, lambda started: started)
    submit.set_result(SID)
    await service.drain()

    assert count(mocked, "POST", CANCEL) == 1


async def test_drain_gives_up_on_cancels_still_waiting_after_its_timeout(
    service: QueryService, mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    never_answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    service.cancel_when_started(never_answered, lambda started: started)

    await asyncio.wait_for(service.drain(timeout_s=0.05), 5)

    assert count(mocked, "POST", CANCEL) == 0
    assert "1 cancels did not finish within 0.05 s" in caplog.text


async def test_max_rows_caps_the_buffered_result(
    service: QueryService, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=succeeded([[str(i), "x"] for i in range(10)]))

    result = await service.execute_query("SELECT *", options=QueryOptions(max_rows=4))

    assert result.row_count == 4
    assert result.truncated is True


async def test_the_request_carries_parameters_and_options(
    service: QueryService, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=succeeded([]))
    options = QueryOptions(
        catalog="samples",
        schema="nyctaxi",
        row_limit=10,
        timeout_s=30,
        query_tags={"request_id": "r1"},
    )

    await service.execute_query("SELECT :zip", {"zip": 10001}, options)

    (call,) = mocked.requests[("POST", URL(STATEMENTS))]
    body = call.kwargs["json"]
    assert body["parameters"] == [{"name": "zip", "value": "10001", "type": "BIGINT"}]
    assert body["catalog"] == "samples"
    assert body["schema"] == "nyctaxi"
    assert body["row_limit"] == 10
    assert body["wait_timeout"] == "5s"
    assert body["on_wait_timeout"] == "CONTINUE"
    assert body["query_tags"] == [{"key": "request_id", "value": "r1"}]
    assert ":zip" in body["statement"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1, {"value": "1", "type": "BIGINT"}, id="int"),
        pytest.param(
            -9223372036854775808, {"value": "-9223372036854775808", "type": "BIGINT"}, id="min-long"
        ),
        pytest.param(1.5, {"value": "1.5", "type": "DOUBLE"}, id="float"),
        pytest.param(True, {"value": "true", "type": "BOOLEAN"}, id="bool"),
        pytest.param("it's", {"value": "it's", "type": "STRING"}, id="string"),
        pytest.param(None, {}, id="null"),
        pytest.param(
            TypedParam("2024-01-01", "DATE"), {"value": "2024-01-01", "type": "DATE"}, id="typed"
        ),
        pytest.param(TypedParam(None, "DATE"), {"type": "DATE"}, id="typed-null"),
    ],
)
def test_parameters_map_to_typed_string_values(value: Any, expected: dict[str, str]) -> None:
    (param,) = to_statement_parameters({"p": value})

    assert param.model_dump(exclude_none=True) == {"name": "p", **expected}


@pytest.mark.parametrize("name", ["1abc", "a-b", "", "a b", "x;DROP"])
def test_parameter_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(InvalidQuery, match="identifier"):
        to_statement_parameters({name: 1})


@pytest.mark.parametrize(
    ("remaining", "preferred", "expected"),
    [
        pytest.param(60, 5, "5s", id="preferred"),
        pytest.param(300, 99, "50s", id="capped-at-50"),
        pytest.param(8, 10, "7s", id="within-deadline"),
        pytest.param(4, 10, "0s", id="too-short-for-5s"),
        pytest.param(60, 0, "0s", id="async"),
    ],
)
def test_wait_timeout_fits_the_protocol_and_the_deadline(
    remaining: float, preferred: int, expected: str
) -> None:
    assert choose_wait_timeout(remaining, preferred) == expected
