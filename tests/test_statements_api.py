"""The asynchronous statements API against a mocked warehouse: handles, pages, cancel, retries."""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from dbx_backend.api.statements import setup_statement_routes
from dbx_backend.app import create_app
from dbx_backend.config import Settings, load_settings
from dbx_backend.engine import handles
from dbx_backend.engine.handles import UNKNOWN_HANDLE, HandleSigner
from dbx_backend.engine.idempotency import IdempotencyStore, Submitted
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.keys import HANDLE_SIGNER
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import TEST_ENV, TEST_HOST, WALL_CLOCK_START, FakeClock

STATEMENTS = f"{TEST_HOST}/api/2.0/sql/statements"
SID = "01f0-async"
STATUS = f"{STATEMENTS}/{SID}"
CANCEL = f"{STATUS}/cancel"
SECRET = "statement-handle-secret-for-tests-0123456789"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]

COLUMNS = [
    {"name": "n", "position": 0, "type_name": "LONG", "type_text": "BIGINT"},
    {"name": "s", "position": 1, "type_name": "STRING", "type_text": "STRING"},
]
# Five rows in three chunks: [0, 2), [2, 4), [4, 5).
CHUNKS = [
    {"chunk_index": 0, "row_offset": 0, "row_count": 2},
    {"chunk_index": 1, "row_offset": 2, "row_count": 2},
    {"chunk_index": 2, "row_offset": 4, "row_count": 1},
]
DATA = [[str(n), f"row {n}"] for n in range(5)]
ROWS = [[n, f"row {n}"] for n in range(5)]


def chunk(index: int) -> dict[str, Any]:
    info = CHUNKS[index]
    start, count = info["row_offset"], info["row_count"]
    body: dict[str, Any] = {**info, "data_array": DATA[start : start + count]}
    if index + 1 < len(CHUNKS):
        body["next_chunk_index"] = index + 1
        body["next_chunk_internal_link"] = (
            f"/api/2.0/sql/statements/{SID}/result/chunks/{index + 1}?row_offset={start + count}"
        )
    return body


def succeeded(*, list_chunks: bool = True) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "schema": {"column_count": 2, "columns": COLUMNS},
        "total_chunk_count": len(CHUNKS),
        "total_row_count": len(DATA),
    }
    if list_chunks:
        manifest["chunks"] = CHUNKS
    return {
        "statement_id": SID,
        "status": {"state": "SUCCEEDED"},
        "manifest": manifest,
        "result": chunk(0),
    }


def state(name: str, **status: Any) -> dict[str, Any]:
    return {"statement_id": SID, "status": {"state": name, **status}}


FAILED = state(
    "FAILED",
    error={"error_code": "BAD_REQUEST", "message": "[TABLE_OR_VIEW_NOT_FOUND] nope"},
    sql_state="42P01",
)


def settings_with(**env: str) -> Settings:
    return load_settings({**TEST_ENV, "STATEMENT_HANDLE_SECRET": SECRET, **env}, env_file=None)


def make_app(settings: Settings, clock: Callable[[], float] | None = None) -> web.Application:
    app = create_app(settings, retry_policy=NO_WAIT, poll_schedule=PollSchedule(0.01, 1, 0.01))
    if "submit_statement" not in app.router.named_resources():
        setup_statement_routes(app, settings)
    if clock is not None:
        app[HANDLE_SIGNER] = HandleSigner.from_settings(settings, clock)
    return app


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(WALL_CLOCK_START)


@pytest.fixture
async def client(aiohttp_client: MakeClient, wall: FakeClock) -> Client:
    return await aiohttp_client(make_app(settings_with(), wall))


async def submit(client: Client, body: Any = None, **kwargs: Any) -> dict[str, Any]:
    response = await client.post("/api/statements", json=body or {"sql": "SELECT 1"}, **kwargs)
    assert response.status == 202, await response.text()
    payload: dict[str, Any] = await response.json()
    return payload


async def get_json(client: Client, path: str) -> tuple[int, dict[str, Any]]:
    response = await client.get(path)
    return response.status, await response.json()


def warehouse_calls(mocked: aioresponses, method: str = "GET") -> list[str]:
    """Every `method` call the warehouse saw, one entry per call, grouped by URL."""
    return [
        str(url)
        for (verb, url), calls in mocked.requests.items()
        if verb == method and url.host != "127.0.0.1"
        for _ in calls
    ]


def chunk_url(index: int) -> str:
    return f"{STATUS}/result/chunks/{index}"


# -- submit, poll, page ---------------------------------------------------------------------


async def test_submit_answers_202_with_a_handle_and_does_not_wait_for_rows(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))

    body = await submit(client, {"sql": "SELECT * FROM t WHERE n = :n", "params": {"n": 3}})

    assert body["state"] == "PENDING"
    assert body["statement_id"] != SID
    sent = mocked.requests[("POST", URL(STATEMENTS))][0].kwargs["json"]
    assert sent["on_wait_timeout"] == "CONTINUE"
    assert sent["wait_timeout"] == "0s"
    assert sent["parameters"] == [{"name": "n", "value": "3", "type": "BIGINT"}]


async def test_submit_poll_page_until_complete(client: Client, mocked: aioresponses) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=state("RUNNING"))
    mocked.get(STATUS, payload=succeeded(), repeat=True)
    mocked.get(chunk_url(1), payload=chunk(1), repeat=True)
    mocked.get(chunk_url(2), payload=chunk(2), repeat=True)
    handle = (await submit(client))["statement_id"]

    running = await get_json(client, f"/api/statements/{handle}")
    assert running == (200, {"statement_id": handle, "state": "RUNNING", "elapsed_ms": 0})
    done = await get_json(client, f"/api/statements/{handle}?limit=1")
    pages, offset = [], done[1]["next_offset"]
    for _ in range(10):  # bounded: five rows, two per page
        if offset is None:
            break
        status, page = await get_json(
            client, f"/api/statements/{handle}/rows?offset={offset}&limit=2"
        )
        assert status == 200
        pages.append(page)
        offset = page["next_offset"]

    assert done[1]["state"] == "SUCCEEDED"
    assert [c["name"] for c in done[1]["columns"]] == ["n", "s"]
    assert (done[1]["row_count"], done[1]["truncated"], done[1]["rows"]) == (5, False, ROWS[:1])
    assert [p["offset"] for p in pages] == [1, 3]
    assert done[1]["rows"] + [row for p in pages for row in p["rows"]] == ROWS
    assert pages[-1] == {
        "rows": ROWS[3:5],
        "offset": 3,
        "row_count": 2,
        "total_row_count": 5,
        "next_offset": None,
    }


@pytest.mark.parametrize(
    ("offset", "limit", "fetched", "rows"),
    [
        pytest.param(0, 2, [], ROWS[0:2], id="chunk-0-comes-with-the-status"),
        pytest.param(2, 2, [1], ROWS[2:4], id="exactly-chunk-1"),
        pytest.param(3, 2, [1, 2], ROWS[3:5], id="straddles-chunks-1-and-2"),
        pytest.param(1, 10, [1, 2], ROWS[1:5], id="runs-to-the-end"),
        pytest.param(4, 1, [2], ROWS[4:5], id="only-the-last-chunk"),
        pytest.param(5, 3, [], [], id="past-the-end-is-empty"),
    ],
)
async def test_a_page_fetches_only_the_chunks_that_hold_it(
    client: Client,
    mocked: aioresponses,
    offset: int,
    limit: int,
    fetched: list[int],
    rows: list[list[Any]],
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=succeeded(), repeat=True)
    for index in (1, 2):
        mocked.get(chunk_url(index), payload=chunk(index), repeat=True)
    handle = (await submit(client))["statement_id"]

    status, page = await get_json(
        client, f"/api/statements/{handle}/rows?offset={offset}&limit={limit}"
    )

    assert status == 200
    assert (page["rows"], page["total_row_count"]) == (rows, 5)
    assert [u for u in warehouse_calls(mocked) if "/chunks/" in u] == [
        chunk_url(i) for i in fetched
    ]


async def test_without_a_chunk_listing_pages_follow_the_next_pointers(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=succeeded(list_chunks=False))
    mocked.get(f"{chunk_url(1)}?row_offset=2", payload=chunk(1))
    handle = (await submit(client))["statement_id"]

    status, page = await get_json(client, f"/api/statements/{handle}/rows?offset=1&limit=2")

    assert (status, page["rows"], page["next_offset"]) == (200, ROWS[1:3], 3)
    assert [u for u in warehouse_calls(mocked) if "/chunks/" in u] == [
        f"{chunk_url(1)}?row_offset=2"
    ]


async def test_pages_of_an_external_links_result_are_downloaded_without_our_token(
    client: Client, mocked: aioresponses
) -> None:
    link = "https://storage.example.com/chunk0?sig=secret"
    result = {
        "external_links": [
            {"external_link": link, "chunk_index": 0, "row_offset": 0, "row_count": 5}
        ]
    }
    manifest = {"schema": {"columns": COLUMNS}, "total_row_count": 5, "total_chunk_count": 1}
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload={**state("SUCCEEDED"), "manifest": manifest, "result": result})
    mocked.get(link, body=str(DATA).replace("'", '"'))
    handle = (await submit(client))["statement_id"]

    status, page = await get_json(client, f"/api/statements/{handle}/rows?offset=2&limit=2")

    assert (status, page["rows"]) == (200, ROWS[2:4])
    download = mocked.requests[("GET", URL(link))][0]
    assert "Authorization" not in (download.kwargs.get("headers") or {})


async def test_an_expired_link_is_refreshed_through_the_chunk_endpoint(
    client: Client, mocked: aioresponses
) -> None:
    stale, fresh = "https://storage.example.com/old", "https://storage.example.com/new"
    manifest = {"schema": {"columns": COLUMNS}, "total_row_count": 5, "total_chunk_count": 1}

    def links(url: str) -> dict[str, Any]:
        return {"external_links": [{"external_link": url, "row_offset": 0, "row_count": 5}]}

    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload={**state("SUCCEEDED"), "manifest": manifest, "result": links(stale)})
    mocked.get(stale, status=403)
    mocked.get(chunk_url(0), payload=links(fresh))
    mocked.get(fresh, body=str(DATA).replace("'", '"'))
    handle = (await submit(client))["statement_id"]

    status, page = await get_json(client, f"/api/statements/{handle}/rows?offset=4&limit=9")

    assert (status, page["rows"]) == (200, ROWS[4:5])
    assert warehouse_calls(mocked) == [STATUS, stale, chunk_url(0), fresh]


async def test_the_handle_carries_long_as_string(client: Client, mocked: aioresponses) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=succeeded())
    handle = (await submit(client, {"sql": "SELECT 1", "long_as_string": True}))["statement_id"]

    status, body = await get_json(client, f"/api/statements/{handle}?limit=2")

    assert (status, body["rows"]) == (200, [["0", "row 0"], ["1", "row 1"]])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param("offset=-1", "offset", id="negative-offset"),
        pytest.param("offset=ten", "offset", id="offset-not-a-number"),
        pytest.param("limit=0", "limit", id="zero-limit"),
        pytest.param("limit=1.5", "limit", id="fractional-limit"),
    ],
)
async def test_a_bad_page_parameter_is_a_400_naming_it(
    client: Client, mocked: aioresponses, query: str, field: str
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    handle = (await submit(client))["statement_id"]

    status, body = await get_json(client, f"/api/statements/{handle}/rows?{query}")

    assert (status, body["error"]["code"], body["error"]["field"]) == (
        400,
        "INVALID_REQUEST",
        field,
    )
    assert warehouse_calls(mocked) == []


@pytest.mark.parametrize(
    "state_name",
    [
        pytest.param("PENDING", id="pending"),
        pytest.param("RUNNING", id="running"),
        pytest.param("FAILED", id="failed"),
        pytest.param("CANCELED", id="canceled"),
    ],
)
async def test_rows_before_success_are_a_409_statement_not_ready_with_the_state(
    client: Client, mocked: aioresponses, state_name: str
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=FAILED if state_name == "FAILED" else state(state_name))
    handle = (await submit(client))["statement_id"]

    status, body = await get_json(client, f"/api/statements/{handle}/rows")

    assert (status, body["error"]["code"], body["error"]["state"]) == (
        409,
        "STATEMENT_NOT_READY",
        state_name,
    )
    assert state_name in body["error"]["message"]
    assert body["error"]["retryable"] is False


async def test_a_running_statement_says_how_long_it_has_run(
    client: Client, mocked: aioresponses, wall: FakeClock
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=state("PENDING"))
    mocked.get(STATUS, payload=state("RUNNING"))
    handle = (await submit(client))["statement_id"]

    wall.now += 2.5
    pending = await get_json(client, f"/api/statements/{handle}")
    wall.now += 60.25
    running = await get_json(client, f"/api/statements/{handle}")

    assert pending == (200, {"statement_id": handle, "state": "PENDING", "elapsed_ms": 2500})
    assert running == (200, {"statement_id": handle, "state": "RUNNING", "elapsed_ms": 62750})


async def test_a_state_the_protocol_adds_later_is_reported_as_running(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=state("QUEUED_FOR_GPU"))
    handle = (await submit(client))["statement_id"]

    status, body = await get_json(client, f"/api/statements/{handle}")

    assert (status, body["state"]) == (200, "RUNNING")


async def test_a_limit_over_the_cap_is_a_400_naming_the_cap(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    handle = (await submit(client))["statement_id"]

    rows = await get_json(client, f"/api/statements/{handle}/rows?limit=10001")
    first_page = await get_json(client, f"/api/statements/{handle}?limit=10001")

    for status, body in (rows, first_page):
        assert (status, body["error"]["field"]) == (400, "limit")
        assert "10000" in body["error"]["message"]
    assert warehouse_calls(mocked) == []


# -- waiting at submit ----------------------------------------------------------------------


async def test_wait_s_lets_the_warehouse_hold_the_submit_and_answers_the_end(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=succeeded())

    body = await submit(client, {"sql": "SELECT 1", "wait_s": 10})

    assert body["state"] == "SUCCEEDED"
    sent = mocked.requests[("POST", URL(STATEMENTS))][0].kwargs["json"]
    # The warehouse holds the submit for most of wait_s; the last second or so is ours.
    assert sent["wait_timeout"] in ("8s", "9s")


async def test_a_short_wait_s_polls_until_the_statement_ends(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=state("RUNNING"))
    mocked.get(STATUS, payload=succeeded())

    body = await submit(client, {"sql": "SELECT 1", "wait_s": 3})

    assert body["state"] == "SUCCEEDED"
    assert mocked.requests[("POST", URL(STATEMENTS))][0].kwargs["json"]["wait_timeout"] == "0s"
    assert warehouse_calls(mocked) == [STATUS, STATUS]


async def test_when_wait_s_runs_out_the_answer_is_the_running_state(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=state("RUNNING"), repeat=True)

    body = await submit(client, {"sql": "SELECT 1", "wait_s": 0.1})

    assert body["state"] == "RUNNING"
    assert 1 <= len(warehouse_calls(mocked)) <= 20  # polled within the tenth of a second
    assert warehouse_calls(mocked, "POST") == [STATEMENTS]  # and never cancelled


@pytest.mark.parametrize(
    ("wait_s", "problem"),
    [
        pytest.param(-1, "greater than or equal to 0", id="negative"),
        pytest.param(51, "less than or equal to 50", id="over-50"),
        pytest.param("5", "valid number", id="a-string"),
    ],
)
async def test_a_bad_wait_s_is_a_400_naming_it(
    client: Client, mocked: aioresponses, wait_s: Any, problem: str
) -> None:
    response = await client.post("/api/statements", json={"sql": "SELECT 1", "wait_s": wait_s})
    error = (await response.json())["error"]

    assert (response.status, error["field"]) == (400, "wait_s")
    assert problem in error["message"]
    assert warehouse_calls(mocked, "POST") == []


async def test_wait_s_belongs_to_submits_only(client: Client, mocked: aioresponses) -> None:
    response = await client.post("/api/query", json={"sql": "SELECT 1", "wait_s": 1})

    assert response.status == 400
    assert (await response.json())["error"]["field"] == "wait_s"


# -- failures -------------------------------------------------------------------------------


async def test_polling_a_failed_statement_is_a_200_carrying_its_error(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=FAILED)
    handle = (await submit(client))["statement_id"]

    response = await client.get(f"/api/statements/{handle}")
    body = await response.json()

    assert response.status == 200
    assert (body["statement_id"], body["state"]) == (handle, "FAILED")
    error = body["error"]
    assert (error["code"], error["sql_state"], error["retryable"]) == ("SQL_ERROR", "42P01", False)
    assert "TABLE_OR_VIEW_NOT_FOUND" in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]


async def test_a_submit_that_fails_at_once_answers_sql_error(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=FAILED)

    response = await client.post("/api/statements", json={"sql": "SELECT * FROM nope"})

    assert response.status == 400
    assert (await response.json())["error"]["code"] == "SQL_ERROR"


@pytest.mark.parametrize(
    "state_name", [pytest.param("CANCELED", id="canceled"), pytest.param("CLOSED", id="closed")]
)
async def test_canceled_and_closed_are_reported_as_states(
    client: Client, mocked: aioresponses, state_name: str
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=state(state_name))
    handle = (await submit(client))["statement_id"]

    assert await get_json(client, f"/api/statements/{handle}") == (
        200,
        {"statement_id": handle, "state": state_name},
    )


async def test_a_statement_the_warehouse_forgot_is_a_404(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, status=404, payload={"error_code": "NOT_FOUND", "message": "purged"})
    handle = (await submit(client))["statement_id"]

    status, body = await get_json(client, f"/api/statements/{handle}")

    assert (status, body["error"]["code"]) == (404, "NOT_FOUND")


async def test_read_only_policy_applies_to_submits(client: Client, mocked: aioresponses) -> None:
    response = await client.post("/api/statements", json={"sql": "DROP TABLE t"})

    assert response.status == 403
    assert (await response.json())["error"]["code"] == "STATEMENT_NOT_ALLOWED"
    assert warehouse_calls(mocked, "POST") == []


# -- cancel ---------------------------------------------------------------------------------


async def test_delete_sends_the_cancel_to_the_warehouse(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("RUNNING"))
    mocked.post(CANCEL, payload={})
    handle = (await submit(client))["statement_id"]

    response = await client.delete(f"/api/statements/{handle}")

    assert response.status == 202
    assert await response.json() == {"statement_id": handle}
    assert warehouse_calls(mocked, "POST") == [STATEMENTS, CANCEL]


async def test_a_handle_issued_before_submit_times_were_kept_still_opens(
    client: Client, mocked: aioresponses, wall: FakeClock
) -> None:
    signer = client.app[HANDLE_SIGNER]
    payload = struct.pack(">BQB", 1, int(wall.now + 3600 - 30), 0) + SID.encode()
    old = base64.urlsafe_b64encode(payload + signer._mac(payload, "")).rstrip(b"=").decode()
    mocked.get(STATUS, payload=state("RUNNING"))

    status, body = await get_json(client, f"/api/statements/{old}")

    assert (status, body["state"], body["elapsed_ms"]) == (200, "RUNNING", 30_000)


# -- handles --------------------------------------------------------------------------------


def _tampered(handle: str) -> str:
    middle = len(handle) // 2
    return handle[:middle] + ("A" if handle[middle] != "A" else "B") + handle[middle + 1 :]


def _foreign(handle: str) -> str:
    return HandleSigner(b"another-secret-entirely-0123456789", 3600).issue(SID)


@pytest.mark.parametrize(
    ("forge", "advance_s"),
    [
        pytest.param(_tampered, 0, id="tampered"),
        pytest.param(_foreign, 0, id="foreign-secret"),
        pytest.param(lambda h: h, 3601, id="expired"),
        pytest.param(lambda h: "not-a-handle", 0, id="garbage"),
        pytest.param(lambda h: h[:20], 0, id="truncated"),
        pytest.param(lambda h: SID, 0, id="raw-statement-id"),
    ],
)
@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        pytest.param("GET", "", id="status"),
        pytest.param("GET", "/rows", id="rows"),
        pytest.param("DELETE", "", id="cancel"),
    ],
)
async def test_a_bad_handle_is_a_404_and_reaches_no_warehouse(
    client: Client,
    mocked: aioresponses,
    wall: FakeClock,
    forge: Callable[[str], str],
    advance_s: float,
    method: str,
    suffix: str,
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"))
    handle = forge((await submit(client))["statement_id"])
    wall.now += advance_s

    response = await client.request(method, f"/api/statements/{handle}{suffix}")
    body = await response.json()

    assert response.status == 404
    assert body["error"]["code"] == "NOT_FOUND"
    assert body["error"]["message"] == UNKNOWN_HANDLE
    assert body["error"]["request_id"]
    assert warehouse_calls(mocked, "GET") == []
    assert warehouse_calls(mocked, "POST") == [STATEMENTS]


async def test_a_handle_from_one_instance_is_accepted_by_another_with_the_same_secret(
    aiohttp_client: MakeClient, mocked: aioresponses
) -> None:
    first = await aiohttp_client(make_app(settings_with()))
    second = await aiohttp_client(make_app(settings_with()))
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=state("RUNNING"))

    handle = (await submit(first))["statement_id"]
    status, body = await get_json(second, f"/api/statements/{handle}")

    assert (status, body["state"]) == (200, "RUNNING")


async def test_without_a_secret_another_instance_refuses_the_handle_and_a_warning_is_logged(
    aiohttp_client: MakeClient,
    mocked: aioresponses,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handles, "_warned_random_secret", False)
    plain = load_settings(TEST_ENV, env_file=None)
    with caplog.at_level(logging.WARNING, logger="dbx_backend.api"):
        first = await aiohttp_client(make_app(plain))
        second = await aiohttp_client(make_app(plain))
    mocked.post(STATEMENTS, payload=state("PENDING"))

    handle = (await submit(first))["statement_id"]
    status, _ = await get_json(second, f"/api/statements/{handle}")

    assert status == 404
    warnings = [r for r in caplog.records if "STATEMENT_HANDLE_SECRET" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_handle_is_bound_to_the_api_key_that_submitted_it(
    aiohttp_client: MakeClient, mocked: aioresponses
) -> None:
    client = await aiohttp_client(make_app(settings_with(API_KEYS="key-one,key-two")))
    mocked.post(STATEMENTS, payload=state("PENDING"))
    mocked.get(STATUS, payload=state("RUNNING"), repeat=True)
    one, two = {"Authorization": "Bearer key-one"}, {"Authorization": "Bearer key-two"}
    handle = (await submit(client, headers=one))["statement_id"]

    own = await client.get(f"/api/statements/{handle}", headers=one)
    other = await client.get(f"/api/statements/{handle}", headers=two)

    assert (own.status, other.status) == (200, 404)


# -- Idempotency-Key ------------------------------------------------------------------------


async def test_a_repeated_idempotency_key_returns_the_same_handle_and_submits_once(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"), repeat=True)
    key = {"Idempotency-Key": "order-42"}

    first = await submit(client, {"sql": "SELECT 1"}, headers=key)
    again = await submit(client, {"sql": "SELECT 1"}, headers=key)
    other = await submit(client, {"sql": "SELECT 1"}, headers={"Idempotency-Key": "order-43"})

    assert again == first
    assert other["statement_id"] == first["statement_id"]  # same statement id, same expiry
    assert len(warehouse_calls(mocked, "POST")) == 2


async def test_concurrent_requests_with_one_idempotency_key_submit_once(
    client: Client, mocked: aioresponses
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_submit(url: URL, **kwargs: Any) -> CallbackResult:
        entered.set()
        await release.wait()
        return CallbackResult(payload=state("PENDING"))

    mocked.post(STATEMENTS, callback=slow_submit, repeat=True)
    key = {"Idempotency-Key": "k-1"}

    first = asyncio.ensure_future(submit(client, headers=key))
    await asyncio.wait_for(entered.wait(), 2)
    second = asyncio.ensure_future(submit(client, headers=key))
    for _ in range(20):  # let the second request reach the store while the first waits
        await asyncio.sleep(0.001)
    release.set()
    answers = await asyncio.wait_for(asyncio.gather(first, second), 2)

    assert answers[0] == answers[1]
    assert len(warehouse_calls(mocked, "POST")) == 1


async def test_an_idempotency_key_reused_with_another_body_is_refused(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"), repeat=True)
    key = {"Idempotency-Key": "k-2"}
    await submit(client, {"sql": "SELECT 1"}, headers=key)

    response = await client.post("/api/statements", json={"sql": "SELECT 2"}, headers=key)
    body = await response.json()

    assert response.status == 400
    assert body["error"]["field"] == "Idempotency-Key"
    assert len(warehouse_calls(mocked, "POST")) == 1


async def test_a_retry_that_waits_another_time_is_the_same_request(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=state("PENDING"), repeat=True)
    mocked.get(STATUS, payload=state("RUNNING"), repeat=True)
    key = {"Idempotency-Key": "k-wait"}

    first = await submit(client, {"sql": "SELECT 1", "wait_s": 0}, headers=key)
    again = await submit(client, {"sql": "SELECT 1", "wait_s": 0.2}, headers=key)

    assert again == {"statement_id": first["statement_id"], "state": "RUNNING"}
    assert len(warehouse_calls(mocked, "POST")) == 1
    assert len(warehouse_calls(mocked)) >= 1  # the replay waited, polling


async def test_a_failed_submit_is_not_remembered(client: Client, mocked: aioresponses) -> None:
    mocked.post(STATEMENTS, status=400, payload={"error_code": "BAD_REQUEST", "message": "no"})
    mocked.post(STATEMENTS, payload=state("PENDING"))
    key = {"Idempotency-Key": "k-3"}

    failed = await client.post("/api/statements", json={"sql": "SELECT 1"}, headers=key)
    retried = await client.post("/api/statements", json={"sql": "SELECT 1"}, headers=key)

    assert (failed.status, retried.status) == (502, 202)
    assert len(warehouse_calls(mocked, "POST")) == 2


async def test_a_submit_that_may_have_run_is_replayed_not_sent_again(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, exception=aiohttp.ServerDisconnectedError())
    mocked.post(STATEMENTS, payload=state("PENDING"))
    key = {"Idempotency-Key": "k-lost"}

    lost = await client.post("/api/statements", json={"sql": "SELECT 1"}, headers=key)
    again = await client.post("/api/statements", json={"sql": "SELECT 1"}, headers=key)

    assert (lost.status, again.status) == (503, 503)
    assert len(warehouse_calls(mocked, "POST")) == 1


async def test_the_idempotency_store_shares_one_submit_between_concurrent_callers() -> None:
    store = IdempotencyStore(60.0)
    release = asyncio.Event()
    calls = 0

    async def submit_once() -> Submitted:
        nonlocal calls
        calls += 1
        await release.wait()
        return Submitted("handle", "PENDING", SID)

    first = asyncio.ensure_future(store.submit_once(("", "k"), "f", submit_once))
    second = asyncio.ensure_future(store.submit_once(("", "k"), "f", submit_once))
    await asyncio.sleep(0)
    release.set()

    assert list(await asyncio.gather(first, second)) == [Submitted("handle", "PENDING", SID)] * 2
    assert calls == 1


async def test_the_idempotency_store_forgets_after_its_window_and_past_its_size() -> None:
    now = [0.0]
    store = IdempotencyStore(10.0, max_keys=2, clock=lambda: now[0])
    calls: list[str] = []

    def submitter(name: str) -> Callable[[], Awaitable[Submitted]]:
        async def run() -> Submitted:
            calls.append(name)
            return Submitted(name, "PENDING", SID)

        return run

    await store.submit_once(("", "a"), "f", submitter("a1"))
    now[0] = 10.0
    await store.submit_once(("", "a"), "f", submitter("a2"))
    await store.submit_once(("", "b"), "f", submitter("b"))
    await store.submit_once(("", "c"), "f", submitter("c"))
    await store.submit_once(("", "a"), "f", submitter("a3"))

    assert calls == ["a1", "a2", "b", "c", "a3"]
    assert len(store) == 2


# -- a caller that leaves mid-submit --------------------------------------------------------


async def _leave_mid_submit(
    client: Client, mocked: aioresponses, caplog: pytest.LogCaptureFixture, headers: dict[str, str]
) -> None:
    """Submit with a warehouse that holds the POST; close the connection; then let it answer."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def held_submit(url: URL, **kwargs: Any) -> CallbackResult:
        entered.set()
        await release.wait()
        return CallbackResult(payload=state("RUNNING"))

    mocked.post(STATEMENTS, callback=held_submit)
    mocked.post(CANCEL, payload={})
    caplog.set_level(logging.INFO, logger="dbx_backend.access")
    request = asyncio.ensure_future(
        client.post("/api/statements", json={"sql": "SELECT 1"}, headers=headers)
    )
    await asyncio.wait_for(entered.wait(), 2)
    request.cancel()
    for _ in range(400):  # bounded: until the service saw the caller leave (status 499)
        if any(getattr(r, "status", None) == 499 for r in caplog.records):
            break
        await asyncio.sleep(0.005)
    release.set()
    await asyncio.sleep(0.01)


async def test_a_caller_leaving_mid_submit_gets_its_statement_cancelled(
    client: Client, mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    await _leave_mid_submit(client, mocked, caplog, headers={})

    for _ in range(200):  # bounded: the follow-up cancel runs in the background
        if CANCEL in warehouse_calls(mocked, "POST"):
            break
        await asyncio.sleep(0.005)
    assert warehouse_calls(mocked, "POST") == [STATEMENTS, CANCEL]


async def test_with_an_idempotency_key_a_caller_leaving_mid_submit_can_collect_it_later(
    client: Client, mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    key = {"Idempotency-Key": "k-left"}
    await _leave_mid_submit(client, mocked, caplog, headers=key)

    retried = await submit(client, headers=key)

    assert retried["state"] == "RUNNING"
    assert warehouse_calls(mocked, "POST") == [STATEMENTS]
