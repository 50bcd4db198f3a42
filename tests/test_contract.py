"""Real answers match the OpenAPI document's precise schemas: every state of a statement, every
NDJSON line, errors, and the headers each answer declares. The service runs against the local
warehouse over loopback; the schemas are the served document's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator

from dbx_backend.api.openapi import openapi_document
from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.localwarehouse import LocalWarehouse, WarehouseConfig
from dbx_backend.warehouse.retry import NO_WAIT

TOKEN = "dapi-contract-0123456789abcdef"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
DOCUMENT = openapi_document()
NESTED_SQL = (
    "SELECT CAST(9007199254740993 AS BIGINT) AS n, CAST(1.10 AS DECIMAL(4,2)) AS d, "
    "NAMED_STRUCT('id', CAST(1 AS BIGINT), 'tags', ARRAY('a')) AS s, MAP(1, 'x') AS m, "
    "TIMESTAMP'2024-01-15 09:30:00' AS t, X'CAFE' AS b, CAST(NULL AS DOUBLE) AS nothing"
)


def problems(schema: str, value: Any) -> list[str]:
    """Why `value` is not a `schema` of the document (empty when it is one)."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": DOCUMENT["components"]}
    return [error.message for error in Draft202012Validator(root).iter_errors(value)]


def declared_headers(method: str, path: str, status: int) -> set[str]:
    response = DOCUMENT["paths"][path][method]["responses"][str(status)]
    return {name.lower() for name in response.get("headers", {})}


async def checked(response: ClientResponse, schema: str, method: str, path: str) -> dict[str, Any]:
    """The response's JSON body, after checking it against `schema` and its headers."""
    body: dict[str, Any] = await response.json()
    assert problems(schema, body) == [], body
    declared = declared_headers(method, path, response.status)
    assert "x-request-id" in declared
    sent = {name.lower() for name in response.headers}
    service_headers = {"x-request-id", "server-timing", "retry-after", "allow", "etag", "age"}
    assert (service_headers | {"cache-control", "content-disposition"}) & sent <= declared
    return body


@pytest.fixture
async def warehouse() -> AsyncIterator[LocalWarehouse]:
    config = WarehouseConfig(token=TOKEN, seed_samples=False, wait_timeout_scale=0.01)
    async with LocalWarehouse(config) as running:
        yield running


@pytest.fixture
async def service(warehouse: LocalWarehouse, aiohttp_client: MakeClient) -> Client:
    settings = load_settings(
        {
            "DATABRICKS_HOST": warehouse.url,
            "DATABRICKS_HTTP_PATH": warehouse.http_path,
            "DATABRICKS_TOKEN": TOKEN,
            "STATEMENT_HANDLE_SECRET": "contract-secret-0123456789abcdef",
        },
        env_file=None,
    )
    app = create_app(settings, retry_policy=NO_WAIT, poll_schedule=PollSchedule(0.01, 1, 0.01))
    return await aiohttp_client(app)


async def poll_until(service: Client, handle: str, states: set[str]) -> dict[str, Any]:
    """The status once it is in `states`, checked against the schema at every poll (3 s)."""
    body: dict[str, Any] = {}
    for _ in range(300):
        response = await service.get(f"/api/statements/{handle}")
        body = await checked(response, "StatementStatus", "get", "/api/statements/{id}")
        if body["state"] in states:
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached {states}: {body}")


async def submit(service: Client, sql: str, **options: Any) -> str:
    response = await service.post("/api/statements", json={"sql": sql, **options})
    assert response.status == 202
    body = await checked(response, "StatementSubmitted", "post", "/api/statements")
    return str(body["statement_id"])


async def test_a_query_answer_matches_query_response(service: Client) -> None:
    for long_as_string in (False, True):
        body = {"sql": NESTED_SQL, "long_as_string": long_as_string}
        response = await service.post("/api/query", json=body)

        assert response.status == 200
        await checked(response, "QueryResponse", "post", "/api/query")


async def test_a_cached_answer_declares_its_cache_headers_and_its_304(service: Client) -> None:
    body = {"sql": "SELECT 5 AS five"}
    first = await service.post("/api/query", json=body)
    await checked(first, "QueryResponse", "post", "/api/query")
    again = await service.post(
        "/api/query", json=body, headers={"If-None-Match": first.headers["ETag"]}
    )

    assert again.status == 304
    declared = declared_headers("post", "/api/query", 304)
    assert {"etag", "age", "cache-control", "x-request-id"} & {
        h.lower() for h in again.headers
    } <= declared


async def test_every_ndjson_line_matches_its_named_schema(service: Client) -> None:
    response = await service.post(
        "/api/query", json={"sql": NESTED_SQL}, headers={"Accept": "application/x-ndjson"}
    )
    lines = [orjson.loads(line) for line in (await response.read()).splitlines()]

    assert problems("NdjsonHeader", lines[0]) == []
    assert [problems("NdjsonRow", row) for row in lines[1:-1]] == [[]]
    assert problems("NdjsonFooter", lines[-1]) == []
    assert "server-timing" in declared_headers("post", "/api/query", 200)


async def test_a_statement_matches_its_schema_in_every_state(service: Client) -> None:
    slow = await submit(service, "SELECT sleep_ms(5000) AS slept")
    running = await poll_until(service, slow, {"RUNNING"})
    not_ready = await service.get(f"/api/statements/{slow}/rows")
    cancel = await service.delete(f"/api/statements/{slow}")
    canceled = await poll_until(service, slow, {"CANCELED"})
    failed = await poll_until(service, await submit(service, "SELECT * FROM nowhere"), {"FAILED"})
    quick = await submit(service, NESTED_SQL, wait_s=5)
    succeeded = await poll_until(service, quick, {"SUCCEEDED"})
    page = await service.get(f"/api/statements/{quick}/rows?limit=1")

    assert running["elapsed_ms"] >= 0
    assert not_ready.status == 409
    path = "/api/statements/{id}/rows"
    assert (await checked(not_ready, "ErrorResponse", "get", path))["error"]["state"] == "RUNNING"
    assert cancel.status == 202
    await checked(cancel, "CancelSent", "delete", "/api/statements/{id}")
    assert canceled == {"statement_id": slow, "state": "CANCELED"}
    assert failed["error"]["code"] == "SQL_ERROR"
    assert succeeded["rows"][0][0] == 9007199254740993
    assert page.status == 200
    await checked(page, "RowsPage", "get", path)


async def test_errors_match_the_envelope_and_declare_their_headers(service: Client) -> None:
    wrong_method = await service.put("/api/query", json={})
    bad_limit = await service.get("/api/statements/x/rows?limit=10001")

    assert wrong_method.status == 405
    body = await checked(wrong_method, "ErrorResponse", "post", "/api/query")
    assert body["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in wrong_method.headers["Allow"]
    assert bad_limit.status in (400, 404)
    await checked(bad_limit, "ErrorResponse", "get", "/api/statements/{id}/rows")


async def test_the_served_document_matches_its_own_openapi_schema(service: Client) -> None:
    response = await service.get("/openapi.json")

    await checked(response, "OpenApiDocument", "get", "/openapi.json")


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        pytest.param(
            "StatementStatus", {"statement_id": "h", "state": "SUCCEDED"}, id="state-typo"
        ),
        pytest.param(
            "StatementStatus",
            {"statement_id": "h", "state": "RUNNING"},
            id="running-without-elapsed",
        ),
        pytest.param(
            "StatementStatus", {"statement_id": "h", "state": "FAILED"}, id="failed-without-error"
        ),
        pytest.param(
            "ErrorResponse",
            {"error": {"code": "SQL_EROR", "message": "m", "request_id": "r", "retryable": False}},
            id="error-code-typo",
        ),
        pytest.param(
            "ColumnModel",
            {
                "name": "c",
                "type": "BIGINT",
                "type_text": "BIGINT",
                "position": 0,
                "nullable": None,
                "json_type": "number",
            },
            id="column-type-outside-the-list",
        ),
        pytest.param(
            "RowsPage",
            {"rows": [], "offset": -1, "row_count": 0, "total_row_count": 0, "next_offset": None},
            id="negative-offset",
        ),
    ],
)
def test_the_schemas_refuse_what_the_service_never_sends(schema: str, value: Any) -> None:
    assert problems(schema, value) != []
