"""The warehouse client: error bodies, retry policy, chunk links, auth headers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from dbx_backend import __version__
from dbx_backend.config import Settings
from dbx_backend.warehouse import errors as dbx
from dbx_backend.warehouse.client import WarehouseClient, error_from_response
from dbx_backend.warehouse.retry import NO_WAIT, RetryPolicy, never_ran, should_retry
from tests.conftest import TEST_HOST, TEST_TOKEN

STATEMENTS = f"{TEST_HOST}/api/2.0/sql/statements"
SID = "01f0-stmt"
STATUS = f"{STATEMENTS}/{SID}"
DONE = {"statement_id": SID, "status": {"state": "SUCCEEDED"}}


def calls(mock: aioresponses, method: str, url: str) -> list[Any]:
    return list(mock.requests.get((method, URL(url)), []))


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "cls", "code", "text"),
    [
        pytest.param(
            400,
            b'{"error_code":"INVALID_PARAMETER_VALUE","message":"bad wait"}',
            None,
            dbx.BadRequest,
            "INVALID_PARAMETER_VALUE",
            "bad wait",
            id="json-400",
        ),
        pytest.param(
            404,
            b'{"error_code":"NOT_FOUND","message":"gone"}',
            None,
            dbx.NotFound,
            "NOT_FOUND",
            "gone",
            id="json-404",
        ),
        pytest.param(401, b"", None, dbx.Unauthenticated, None, "Unauthorized", id="empty-401"),
        pytest.param(
            403,
            b'{"error":"legacy text"}',
            None,
            dbx.PermissionDenied,
            None,
            "legacy text",
            id="legacy-error-field",
        ),
        pytest.param(
            429,
            b'{"error_code":"REQUEST_LIMIT_EXCEEDED","message":"slow"}',
            "2",
            dbx.RateLimited,
            "REQUEST_LIMIT_EXCEEDED",
            "slow",
            id="429-retry-after",
        ),
        pytest.param(
            400,
            b'{"error_code":"REQUEST_LIMIT_EXCEEDED","message":"bucket"}',
            None,
            dbx.RateLimited,
            "REQUEST_LIMIT_EXCEEDED",
            "bucket",
            id="rate-code-on-400",
        ),
        pytest.param(
            503,
            b"TEMPORARILY_UNAVAILABLE: try later",
            None,
            dbx.ServerError,
            "TEMPORARILY_UNAVAILABLE",
            "try later",
            id="plain-code-colon",
        ),
        pytest.param(
            502,
            b"<html><head><title>502 Bad Gateway</title></head></html>",
            None,
            dbx.ServerError,
            None,
            "502 Bad Gateway",
            id="html-title",
        ),
        pytest.param(
            500,
            b"<html><body><pre>boom in gateway</pre></body></html>",
            None,
            dbx.ServerError,
            None,
            "boom in gateway",
            id="html-pre",
        ),
        pytest.param(
            500, b"something odd", None, dbx.ServerError, None, "something odd", id="plain-text"
        ),
        pytest.param(418, b"", None, dbx.BadRequest, None, "HTTP 418", id="unknown-4xx"),
    ],
)
def test_error_bodies_become_the_right_error(
    status: int,
    body: bytes,
    retry_after: str | None,
    cls: type[dbx.WarehouseError],
    code: str | None,
    text: str,
) -> None:
    reason = {401: "Unauthorized"}.get(status)

    exc = error_from_response(status, reason, body, retry_after)

    assert type(exc) is cls
    assert exc.status == status
    assert exc.error_code == code
    assert text in exc.message
    assert exc.retry_after == (float(retry_after) if retry_after else None)


def test_retry_info_detail_gives_retry_after() -> None:
    body = (
        b'{"error_code":"RESOURCE_EXHAUSTED","message":"x","details":[{"@type":'
        b'"type.googleapis.com/google.rpc.RetryInfo","retry_delay":"3.5s"}]}'
    )

    exc = error_from_response(429, None, body)

    assert exc.retry_after == 3.5


@pytest.mark.parametrize(
    ("exc", "idempotent", "expected"),
    [
        pytest.param(dbx.RateLimited("x", status=429), False, True, id="submit-429"),
        pytest.param(dbx.ServerError("x", status=503), False, True, id="submit-503"),
        pytest.param(dbx.ServerError("x", status=500), False, False, id="submit-500-may-have-run"),
        pytest.param(dbx.ResponseLost("x"), False, False, id="submit-lost-may-have-run"),
        pytest.param(dbx.ConnectFailed("x"), False, True, id="submit-never-left"),
        pytest.param(dbx.ServerError("x", status=500), True, True, id="get-500"),
        pytest.param(dbx.ResponseLost("x"), True, True, id="get-lost"),
        pytest.param(dbx.BadRequest("x", status=400), True, False, id="get-400"),
        pytest.param(dbx.NotFound("x", status=404), True, False, id="get-404"),
        pytest.param(dbx.StatementFailed("x"), True, False, id="sql-error"),
    ],
)
def test_should_retry_follows_the_reference_policy(
    exc: dbx.WarehouseError, idempotent: bool, expected: bool
) -> None:
    assert should_retry(exc, idempotent=idempotent) is expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(dbx.RateLimited("x", status=429), True, id="429"),
        pytest.param(dbx.ServerError("x", status=503), True, id="503"),
        pytest.param(dbx.ConnectFailed("x"), True, id="never-connected"),
        pytest.param(dbx.TokenUnavailable("x"), True, id="no-token"),
        pytest.param(dbx.BadRequest("x", status=400), True, id="400"),
        pytest.param(dbx.Unauthenticated("x", status=401), True, id="401"),
        pytest.param(dbx.ServerError("x", status=500), False, id="500"),
        pytest.param(dbx.ServerError("x", status=502), False, id="502"),
        pytest.param(dbx.ResponseLost("x"), False, id="lost"),
        pytest.param(dbx.ProtocolError("x"), False, id="garbled-answer"),
    ],
)
def test_never_ran_only_for_failed_submits_that_prove_it(
    exc: dbx.WarehouseError, expected: bool
) -> None:
    assert never_ran(exc) is expected


def test_retry_after_is_honoured_as_given_and_capped() -> None:
    policy = RetryPolicy(max_retry_after_s=10)

    assert policy.delay(0, dbx.RateLimited("x", retry_after=2)) == 2
    assert policy.delay(3, dbx.RateLimited("x", retry_after=120)) == 10


def test_backoff_without_retry_after_is_full_jitter_within_the_window() -> None:
    policy = RetryPolicy(initial_delay_s=0.5, max_delay_s=4)
    seen: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        seen.append((low, high))
        return high

    delays = [policy.delay(n, dbx.ServerError("x"), uniform) for n in range(5)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert all(low == 0.0 for low, _ in seen)


async def test_requests_carry_bearer_auth_and_user_agent(
    settings: Settings, mocked: aioresponses
) -> None:
    mocked.get(STATUS, payload=DONE)

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        await client.get_statement(SID)

    (call,) = calls(mocked, "GET", STATUS)
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {TEST_TOKEN}"
    async with WarehouseClient(settings) as client:
        assert client.session.headers["User-Agent"] == f"dbx-backend/{__version__}"


async def test_submit_sends_the_warehouse_id(settings: Settings, mocked: aioresponses) -> None:
    mocked.post(STATEMENTS, payload=DONE)

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        await client.submit({"statement": "SELECT 1"})

    (call,) = calls(mocked, "POST", STATEMENTS)
    assert call.kwargs["json"] == {"warehouse_id": "wh123", "statement": "SELECT 1"}


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param({"status": 429, "headers": {"Retry-After": "1"}}, id="429-retry-after"),
        pytest.param({"status": 429}, id="429-no-retry-after"),
        pytest.param({"status": 503}, id="503"),
        pytest.param({"status": 500}, id="500"),
        pytest.param({"exception": aiohttp.ServerDisconnectedError()}, id="connection-reset"),
    ],
)
async def test_get_status_is_retried_then_succeeds(
    settings: Settings, mocked: aioresponses, failure: dict[str, Any]
) -> None:
    mocked.get(STATUS, **failure)
    mocked.get(STATUS, payload=DONE)

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        response = await client.get_statement(SID)

    assert response.status.state == "SUCCEEDED"
    assert len(calls(mocked, "GET", STATUS)) == 2


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param({"status": 429, "headers": {"Retry-After": "1"}}, id="429"),
        pytest.param({"status": 503}, id="503"),
        pytest.param(
            {
                "exception": aiohttp.ClientConnectorError(
                    aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None),
                    OSError(111, "refused"),
                )
            },
            id="connect-refused",
        ),
    ],
)
async def test_submit_is_retried_when_it_cannot_have_run(
    settings: Settings, mocked: aioresponses, failure: dict[str, Any]
) -> None:
    mocked.post(STATEMENTS, **failure)
    mocked.post(STATEMENTS, payload=DONE)

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        response = await client.submit({"statement": "SELECT 1"})

    assert response.statement_id == SID
    assert len(calls(mocked, "POST", STATEMENTS)) == 2


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        pytest.param({"status": 500}, dbx.ServerError, id="500"),
        pytest.param({"status": 502}, dbx.ServerError, id="502"),
        pytest.param({"exception": TimeoutError()}, dbx.ResponseLost, id="read-timeout"),
        pytest.param(
            {"exception": aiohttp.ServerDisconnectedError()}, dbx.ResponseLost, id="reset"
        ),
    ],
)
async def test_submit_is_not_retried_when_it_may_have_run(
    settings: Settings,
    mocked: aioresponses,
    failure: dict[str, Any],
    error: type[dbx.WarehouseError],
) -> None:
    mocked.post(STATEMENTS, repeat=True, **failure)

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        with pytest.raises(error):
            await client.submit({"statement": "SELECT 1"})

    assert len(calls(mocked, "POST", STATEMENTS)) == 1


async def test_retries_stop_after_the_attempt_budget(
    settings: Settings, mocked: aioresponses
) -> None:
    mocked.get(STATUS, status=503, repeat=True)
    policy = RetryPolicy(attempts=3, initial_delay_s=0, max_delay_s=0)

    async with WarehouseClient(settings, policy=policy) as client:
        with pytest.raises(dbx.ServerError) as caught:
            await client.get_statement(SID)

    assert caught.value.status == 503
    assert len(calls(mocked, "GET", STATUS)) == 3


async def test_chunk_link_is_followed_verbatim(settings: Settings, mocked: aioresponses) -> None:
    link = f"/api/2.0/sql/statements/{SID}/result/chunks/1?row_offset=188416"
    mocked.get(TEST_HOST + link, payload={"chunk_index": 1, "row_offset": 188416})

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        chunk = await client.follow_chunk_link(SID, link)

    assert chunk.row_offset == 188416
    assert len(calls(mocked, "GET", TEST_HOST + link)) == 1


@pytest.mark.parametrize(
    "link",
    [
        pytest.param("/api/2.0/sql/statements/other/result/chunks/1", id="other-statement"),
        pytest.param(
            "https://evil.example/api/2.0/sql/statements/01f0-stmt/result/chunks/1",
            id="absolute-url",
        ),
        pytest.param(
            f"/api/2.0/sql/statements/{SID}/result/chunks/../../../../2.0/x", id="dot-dot"
        ),
        pytest.param("/api/2.0/sql/warehouses", id="other-path"),
    ],
)
async def test_foreign_chunk_links_are_refused_without_a_request(
    settings: Settings, mocked: aioresponses, link: str
) -> None:
    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        with pytest.raises(dbx.ProtocolError):
            await client.follow_chunk_link(SID, link)

    assert mocked.requests == {}


async def test_a_non_json_success_body_is_a_protocol_error(
    settings: Settings, mocked: aioresponses
) -> None:
    mocked.get(STATUS, body="<html>login</html>", content_type="text/html")

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        with pytest.raises(dbx.ProtocolError):
            await client.get_statement(SID)


async def test_cancel_accepts_an_empty_body(settings: Settings, mocked: aioresponses) -> None:
    mocked.post(f"{STATUS}/cancel", body="")

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        await client.cancel(SID)

    (call,) = calls(mocked, "POST", f"{STATUS}/cancel")
    assert call.kwargs["json"] == {}


async def test_error_messages_never_carry_the_token(
    settings: Settings, mocked: aioresponses
) -> None:
    mocked.get(STATUS, status=400, payload={"error_code": "BAD_REQUEST", "message": "nope"})

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        with pytest.raises(dbx.BadRequest) as caught:
            await asyncio.wait_for(client.get_statement(SID), 5)

    assert TEST_TOKEN not in str(caught.value)
    assert TEST_TOKEN not in repr(settings)


class RotatingToken:
    """A token provider whose first token the warehouse refuses."""

    def __init__(self) -> None:
        self.current = "Bearer old-token"
        self.refreshes = 0

    async def authorization(self) -> str:
        return self.current

    async def refresh(self, rejected: str) -> str:
        self.refreshes += 1
        self.current = "Bearer new-token"
        return self.current


async def test_a_401_is_retried_once_with_a_fresh_token(
    settings: Settings, mocked: aioresponses
) -> None:
    mocked.get(STATUS, status=401, payload={"error_code": "UNAUTHENTICATED", "message": "x"})
    mocked.get(STATUS, payload=DONE)
    auth = RotatingToken()

    async with WarehouseClient(settings, policy=NO_WAIT, auth=auth) as client:
        await client.get_statement(SID)

    first, second = calls(mocked, "GET", STATUS)
    assert first.kwargs["headers"]["Authorization"] == "Bearer old-token"
    assert second.kwargs["headers"]["Authorization"] == "Bearer new-token"
    assert auth.refreshes == 1


async def test_a_second_401_is_final(settings: Settings, mocked: aioresponses) -> None:
    mocked.get(STATUS, status=401, payload={"message": "x"}, repeat=True)
    auth = RotatingToken()

    async with WarehouseClient(settings, policy=NO_WAIT, auth=auth) as client:
        with pytest.raises(dbx.Unauthenticated):
            await client.get_statement(SID)

    assert len(calls(mocked, "GET", STATUS)) == 2
    assert auth.refreshes == 1
