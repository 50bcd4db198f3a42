"""The HTTP API against a mocked warehouse: contract, validation, error mapping, CORS, secrets."""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aioresponses import aioresponses
from yarl import URL

from dbx_backend.app import create_app
from dbx_backend.config import Settings
from dbx_backend.engine.query_service import PollSchedule, QueryService
from dbx_backend.keys import QUERY_SERVICE
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import TEST_HOST, TEST_TOKEN

STATEMENTS = f"{TEST_HOST}/api/2.0/sql/statements"
SID = "01f0-api"
STATUS = f"{STATEMENTS}/{SID}"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
SUCCEEDED = {
    "statement_id": SID,
    "status": {"state": "SUCCEEDED"},
    "manifest": {
        "schema": {
            "columns": [
                {"name": "n", "position": 0, "type_name": "LONG", "type_text": "BIGINT"},
                {
                    "name": "amount",
                    "position": 1,
                    "type_name": "DECIMAL",
                    "type_text": "DECIMAL(10,2)",
                    "type_precision": 10,
                    "type_scale": 2,
                },
            ]
        },
        "total_row_count": 2,
    },
    "result": {"data_array": [["9007199254740993", "12.50"], [None, "0.00"]]},
}


@pytest.fixture
async def client(settings: Settings, aiohttp_client: MakeClient) -> Client:
    app = create_app(settings, retry_policy=NO_WAIT, poll_schedule=PollSchedule(0.01, 1, 0.01))
    return await aiohttp_client(app)


async def post_query(client: Client, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post("/api/query", json=body, **kwargs)
    return response.status, await response.json()


async def test_health_needs_no_warehouse(client: Client, mocked: aioresponses) -> None:
    response = await client.get("/health")

    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    assert not [k for k in mocked.requests if k[1].host != "127.0.0.1"]


async def test_query_returns_columns_and_typed_rows(client: Client, mocked: aioresponses) -> None:
    mocked.post(STATEMENTS, payload=SUCCEEDED)

    response = await client.post("/api/query", json={"sql": "SELECT n, amount FROM t"})
    body = await response.json()

    assert response.status == 200
    assert body == {
        "columns": [
            {
                "name": "n",
                "type": "LONG",
                "type_text": "BIGINT",
                "position": 0,
                "nullable": None,
                "json_type": "number",
            },
            {
                "name": "amount",
                "type": "DECIMAL",
                "type_text": "DECIMAL(10,2)",
                "position": 1,
                "nullable": None,
                "precision": 10,
                "scale": 2,
                "json_type": "string",
            },
        ],
        "rows": [[9007199254740993, "12.50"], [None, "0.00"]],
        "row_count": 2,
        "truncated": False,
        "statement_id": SID,
    }
    assert "wait;dur=" in response.headers["Server-Timing"]
    assert "convert;dur=" in response.headers["Server-Timing"]


async def test_long_as_string_renders_big_integers_as_text(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload=SUCCEEDED)

    status, body = await post_query(client, {"sql": "SELECT 1", "long_as_string": True})

    assert status == 200
    assert body["rows"][0][0] == "9007199254740993"
    assert body["columns"][0]["json_type"] == "string"


async def test_params_and_options_reach_the_warehouse(client: Client, mocked: aioresponses) -> None:
    mocked.post(STATEMENTS, payload=SUCCEEDED)

    await post_query(
        client,
        {
            "sql": "SELECT * FROM t WHERE d = :d AND n = :n",
            "catalog": "samples",
            "params": {"d": {"value": "2024-01-01", "type": "DATE"}, "n": 3},
            "row_limit": 5,
        },
    )

    sent = mocked.requests[("POST", URL(STATEMENTS))][0].kwargs["json"]
    assert sent["parameters"] == [
        {"name": "d", "value": "2024-01-01", "type": "DATE"},
        {"name": "n", "value": "3", "type": "BIGINT"},
    ]
    assert sent["catalog"] == "samples"
    assert sent["row_limit"] == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "sql", id="missing-sql"),
        pytest.param({"sql": ""}, "sql", id="empty-sql"),
        pytest.param({"sql": "   \n\t"}, "sql", id="whitespace-sql"),
        pytest.param({"sql": 42}, "sql", id="non-string-sql"),
        pytest.param({"sql": "SELECT 1", "sqll": 1}, "sqll", id="unknown-field"),
        pytest.param(
            {"sql": "SELECT 1", "params": {"bad-name": 1}}, "params.bad-name", id="bad-param-name"
        ),
        pytest.param({"sql": "SELECT 1", "params": {"p": [1, 2]}}, "params.p", id="list-param"),
        pytest.param({"sql": "SELECT 1", "params": {"p": {"a": 1}}}, "params.p", id="object-param"),
        pytest.param(
            {"sql": "SELECT 1", "params": {"p": {"value": 1, "type": "X;DROP"}}},
            "params.p",
            id="bad-param-type",
        ),
        pytest.param({"sql": "SELECT 1", "row_limit": 0}, "row_limit", id="zero-row-limit"),
        pytest.param({"sql": "SELECT 1", "row_limit": "5"}, "row_limit", id="string-row-limit"),
        pytest.param({"sql": "SELECT 1", "timeout_s": -1}, "timeout_s", id="negative-timeout"),
        pytest.param(["SELECT 1"], "body", id="not-an-object"),
    ],
)
async def test_invalid_requests_get_400_naming_the_field(
    client: Client, mocked: aioresponses, body: Any, field: str
) -> None:
    status, answer = await post_query(client, body)

    assert status == 400
    assert answer["error"]["code"] == "INVALID_REQUEST"
    assert answer["error"]["field"].startswith(field)
    assert field.split(".")[0] in answer["error"]["message"] or field == "body"
    assert answer["error"]["retryable"] is False
    assert not [k for k in mocked.requests if k[1].host != "127.0.0.1"]


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        pytest.param(b"{not json", {"Content-Type": "application/json"}, id="broken-json"),
        pytest.param(
            b"sql=SELECT 1", {"Content-Type": "application/x-www-form-urlencoded"}, id="form-body"
        ),
        pytest.param(b"", {"Content-Type": "application/json"}, id="empty-body"),
    ],
)
async def test_a_body_that_is_not_json_gets_400(
    client: Client, data: bytes, headers: dict[str, str]
) -> None:
    response = await client.post("/api/query", data=data, headers=headers)
    body = await response.json()

    assert response.status == 400
    assert body["error"]["code"] == "INVALID_REQUEST"


async def test_a_body_over_the_limit_gets_413(client: Client) -> None:
    big = io.BytesIO(b'{"sql": "SELECT \'' + b"x" * 2_000_000 + b"'\"}")
    response = await client.post(
        "/api/query", data=big, headers={"Content-Type": "application/json"}
    )
    body = await response.json()

    assert response.status == 413
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_unknown_route_and_wrong_method_use_the_envelope(client: Client) -> None:
    missing = await client.get("/api/nope")
    wrong = await client.get("/api/query")

    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "NOT_FOUND"
    assert wrong.status == 405
    assert (await wrong.json())["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_a_sql_error_is_a_400_with_the_warehouse_message_redacted(
    client: Client, mocked: aioresponses
) -> None:
    message = (
        "[TABLE_OR_VIEW_NOT_FOUND] The table `nope` cannot be found. See "
        "https://example.cloud.databricks.com/docs?x=1 host example.cloud.databricks.com"
    )
    mocked.post(
        STATEMENTS,
        payload={
            "statement_id": SID,
            "status": {
                "state": "FAILED",
                "sql_state": "42P01",
                "error": {"error_code": "BAD_REQUEST", "message": message},
            },
        },
    )

    status, body = await post_query(client, {"sql": "SELECT * FROM nope"})

    assert status == 400
    error = body["error"]
    assert error["code"] == "SQL_ERROR"
    assert error["message"].startswith("[TABLE_OR_VIEW_NOT_FOUND] The table `nope`")
    assert "example.cloud.databricks.com" not in error["message"]
    assert error["sql_state"] == "42P01"
    assert error["statement_id"] == SID
    assert error["retryable"] is False


async def test_a_query_past_its_timeout_is_cancelled_and_gets_504(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(STATEMENTS, payload={"statement_id": SID, "status": {"state": "RUNNING"}})
    mocked.get(STATUS, payload={"statement_id": SID, "status": {"state": "RUNNING"}}, repeat=True)
    mocked.post(f"{STATUS}/cancel", body="")

    status, body = await post_query(client, {"sql": "SELECT slow", "timeout_s": 0.2})
    await client.app[QUERY_SERVICE].drain()  # the cancel goes out without delaying the answer

    assert status == 504
    assert body["error"]["code"] == "QUERY_TIMEOUT"
    assert body["error"]["statement_id"] == SID
    assert len(mocked.requests[("POST", URL(f"{STATUS}/cancel"))]) == 1


async def test_an_unavailable_warehouse_gets_503_after_retries(
    client: Client, mocked: aioresponses
) -> None:
    mocked.post(
        STATEMENTS,
        status=503,
        body="<html><title>down at example.cloud</title></html>",
        repeat=True,
    )

    response = await client.post("/api/query", json={"sql": "SELECT 1"})
    body = await response.json()

    assert response.status == 503
    assert body["error"]["code"] == "WAREHOUSE_UNAVAILABLE"
    assert body["error"]["retryable"] is True
    assert "example" not in body["error"]["message"]
    assert len(mocked.requests[("POST", URL(STATEMENTS))]) == NO_WAIT.attempts


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        pytest.param(
            400,
            {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad field"},
            id="warehouse-400",
        ),
        pytest.param(
            401,
            {"error_code": "UNAUTHENTICATED", "message": "bad token"},
            id="our-credential-refused",
        ),
        pytest.param(
            404, {"error_code": "NOT_FOUND", "message": "no warehouse"}, id="unknown-warehouse"
        ),
    ],
)
async def test_warehouse_errors_we_cannot_pass_on_get_502(
    client: Client, mocked: aioresponses, status: int, payload: dict[str, str]
) -> None:
    mocked.post(STATEMENTS, status=status, payload=payload)

    code, body = await post_query(client, {"sql": "SELECT 1"})

    assert code == 502
    assert body["error"]["code"] == "WAREHOUSE_ERROR"
    assert payload["message"] not in body["error"]["message"]


async def test_an_unexpected_failure_gets_a_redacted_500(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"boom {TEST_TOKEN} SELECT secret_column")

    monkeypatch.setattr(QueryService, "answer_json", explode)

    status, body = await post_query(client, {"sql": "SELECT secret_column"})

    assert status == 500
    assert body["error"]["code"] == "INTERNAL_ERROR"
    assert "boom" not in body["error"]["message"]
    assert "secret_column" not in str(body)


async def test_a_sane_request_id_is_echoed_and_an_insane_one_replaced(client: Client) -> None:
    kept = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    replaced = await client.get("/health", headers={"X-Request-ID": "x" * 300})

    assert kept.headers["X-Request-ID"] == "abc-123"
    assert len(replaced.headers["X-Request-ID"]) == 32


async def test_the_error_body_carries_the_request_id(client: Client) -> None:
    response = await client.post("/api/query", json={}, headers={"X-Request-ID": "req-9"})

    assert (await response.json())["error"]["request_id"] == "req-9"


async def test_cors_preflight_from_the_allowed_origin_succeeds(client: Client) -> None:
    response = await client.options(
        "/api/query",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )

    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


async def test_cors_headers_are_not_given_to_other_origins(client: Client) -> None:
    simple = await client.get("/health", headers={"Origin": "http://evil.example"})
    preflight = await client.options(
        "/api/query",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )

    assert "Access-Control-Allow-Origin" not in simple.headers
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_the_token_never_reaches_a_response_or_a_log_line(
    client: Client, mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """One sweep over every kind of answer: success, each error class, 404, CORS."""
    caplog.set_level(logging.DEBUG)
    mocked.post(STATEMENTS, payload=SUCCEEDED)
    mocked.post(
        STATEMENTS,
        payload={
            "statement_id": SID,
            "status": {
                "state": "FAILED",
                "error": {
                    "error_code": "BAD_REQUEST",
                    "message": f"[X] token {TEST_TOKEN} in message",
                },
            },
        },
    )
    mocked.post(STATEMENTS, status=503, body=f"token {TEST_TOKEN}", repeat=NO_WAIT.attempts)
    mocked.post(STATEMENTS, status=400, payload={"message": f"echo {TEST_TOKEN}"})
    seen: list[str] = []
    for body in (
        {"sql": "SELECT 1"},
        {"sql": "SELECT 2"},
        {"sql": "SELECT 3"},
        {"sql": "SELECT 4"},
        {},
        {"sql": 1},
    ):
        response = await client.post("/api/query", json=body)
        seen += [await response.text(), str(dict(response.headers))]
    for path in ("/health", "/nope"):
        response = await client.get(path, headers={"Origin": "http://localhost:3000"})
        seen += [await response.text(), str(dict(response.headers))]

    seen += [record.getMessage() for record in caplog.records]
    seen += [str(record.__dict__) for record in caplog.records]
    assert len(seen) > 16
    assert not [text for text in seen if TEST_TOKEN in text]


def test_a_request_interrupted_by_shutdown_is_logged_as_a_warning_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiohttp.test_utils import make_mocked_request

    from dbx_backend.api.errors import ShuttingDown, error_response

    with caplog.at_level(logging.INFO, logger="dbx_backend.api"):
        request = make_mocked_request("GET", "/", app=web.Application())
        response = error_response(ShuttingDown("stopping"), request)

    assert response.status == 503
    levels = {r.levelname for r in caplog.records if "SHUTTING_DOWN" in r.getMessage()}
    assert levels == {"WARNING"}
