"""The OpenAPI 3.1 document, generated from the contract models the handlers use.

Paths are listed once here, next to the models each operation reads and returns; every schema
comes from pydantic, so the document cannot drift from what the handlers validate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from dbx_backend import __version__
from dbx_backend.api.errors import ERROR_RESPONSES, INTERNAL
from dbx_backend.api.models import (
    MAX_SAFE_INT,
    ErrorResponse,
    HealthResponse,
    NamedQueryList,
    NamedQueryRequest,
    NotReadyResponse,
    QueryRequest,
    QueryResponse,
    ReadyResponse,
    RowsPage,
    StatementStatus,
    StatementSubmitted,
)

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "Invalid request, SQL error or SQL the parser cannot read",
    401: "Missing or wrong API key (when API_KEYS is set)",
    403: "Statement not allowed (read-only), ad-hoc SQL disabled, or a CORS preflight from an "
    "origin not in CORS_ALLOW_ORIGINS",
    404: "No such route, named query or statement handle",
    408: "The request body did not arrive within BODY_READ_TIMEOUT_S",
    413: "Body or SQL too large",
    415: "A Content-Encoding other than gzip, deflate or identity",
    421: "Host not allowed: bound to loopback, the service answers only loopback names and "
    "ALLOWED_HOSTS (DNS rebinding guard)",
    429: "Too many concurrent queries, or (statements) too many open statements for this "
    "caller; see Retry-After",
    500: "Unexpected failure (details in the log, by request id)",
    502: "The warehouse answered with an error that cannot be passed on",
    503: "The warehouse is unavailable, or the service is busy (its memory budget is full) or "
    "shutting down; see Retry-After",
    504: "The query ran past its timeout and was cancelled",
}
RUN_ERRORS = (400, 401, 403, 408, 413, 415, 429, 500, 502, 503, 504)
HANDLE_ERRORS = (400, 401, 404, 429, 500, 502, 503, 504)
STREAMS = {
    "application/x-ndjson": "First line {columns, statement_id}, one JSON array per row, "
    "then {row_count, truncated}; or a final {error} line (with statement_id) if the stream "
    "fails.",
    "text/csv": "RFC 4180: a header row, then rows. A failure mid-stream cuts the body short.",
    "application/vnd.apache.arrow.stream": "An Arrow IPC stream: the schema (each field's "
    "metadata has type_text and type_name; the schema's has statement_id, total_row_count and "
    "truncated), then record batches as chunks arrive, then the end-of-stream marker. Types: "
    "the README's type table. A failure mid-stream ends the body inside an unfinished message "
    "(so an Arrow reader fails) followed by the error envelope as JSON, and cuts the body short.",
}


def _codes_by_status() -> dict[int, list[str]]:
    """Each status's `error.code` values, from the one exception -> response table."""
    codes: dict[int, set[str]] = {}
    for row in (*ERROR_RESPONSES.values(), INTERNAL):
        codes.setdefault(row.status, set()).add(row.code)
    return {status: sorted(found) for status, found in codes.items()}


CODES = _codes_by_status()


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path: what it reads, what it answers."""

    method: str
    path: str
    operation_id: str
    summary: str
    body: type[BaseModel] | None = None
    ok_status: int = 200
    ok: type[BaseModel] | None = None
    errors: tuple[int, ...] = (500,)
    query: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    streams: bool = False
    secured: bool = True
    ok_media: str = "application/json"
    extra_headers: tuple[str, ...] = field(default=())
    # Error statuses whose body is not the plain ErrorResponse.
    error_bodies: tuple[tuple[int, type[BaseModel]], ...] = ()


_ID = {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INT}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_SAFE_INT}
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/health",
        "health",
        "Liveness; no warehouse call, no auth.",
        ok=HealthResponse,
        secured=False,
    ),
    Operation(
        "get",
        "/ready",
        "ready",
        "Readiness: the last background check of the warehouse and its age; answers at once.",
        ok=ReadyResponse,
        errors=(500, 503),
        error_bodies=((503, NotReadyResponse),),
        secured=False,
    ),
    Operation(
        "get", "/metrics", "metrics", "Prometheus metrics.", secured=False, ok_media="text/plain"
    ),
    Operation("get", "/openapi.json", "openapi", "This document.", secured=False),
    Operation(
        "post",
        "/api/query",
        "query",
        "Run one SQL statement and return its result.",
        body=QueryRequest,
        ok=QueryResponse,
        errors=RUN_ERRORS,
        streams=True,
        extra_headers=("Server-Timing",),
    ),
    Operation(
        "get",
        "/api/queries",
        "list_queries",
        "The named queries and their parameters.",
        ok=NamedQueryList,
        errors=(401, 500),
    ),
    Operation(
        "post",
        "/api/queries/{name}",
        "run_named_query",
        "Run a named query with values for its declared parameters.",
        body=NamedQueryRequest,
        ok=QueryResponse,
        errors=(*RUN_ERRORS, 404),
        streams=True,
    ),
    Operation(
        "post",
        "/api/statements",
        "submit_statement",
        "Start a statement without waiting; answers a handle. Optional Idempotency-Key.",
        body=QueryRequest,
        ok_status=202,
        ok=StatementSubmitted,
        errors=RUN_ERRORS,
    ),
    Operation(
        "get",
        "/api/statements/{id}",
        "statement_status",
        "A statement's state; once SUCCEEDED, its columns and first page of rows.",
        ok=StatementStatus,
        errors=HANDLE_ERRORS,
        query=(("limit", "Rows in the first page (capped).", _ID),),
    ),
    Operation(
        "get",
        "/api/statements/{id}/rows",
        "statement_rows",
        "A page of a SUCCEEDED statement's rows.",
        ok=RowsPage,
        errors=HANDLE_ERRORS,
        query=(
            ("offset", "First row, 0-based.", _ID),
            ("limit", "Rows in the page (capped).", _LIMIT),
        ),
    ),
    Operation(
        "delete",
        "/api/statements/{id}",
        "cancel_statement",
        "Ask the warehouse to cancel the statement.",
        ok_status=202,
        ok=StatementSubmitted,
        errors=HANDLE_ERRORS,
    ),
)


def _schema_ref(model: type[BaseModel], refs: dict[Any, Any], mode: str) -> dict[str, Any]:
    return dict(refs[(model, mode)])


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    ok_content: dict[str, Any]
    if op.ok is not None:
        ok_content = {op.ok_media: {"schema": _schema_ref(op.ok, refs, "serialization")}}
    elif op.ok_media == "application/json":
        ok_content = {op.ok_media: {"schema": {"type": "object"}}}
    else:
        ok_content = {op.ok_media: {"schema": {"type": "string"}}}
    if op.streams:
        for media, description in STREAMS.items():
            schema = {"type": "string", "description": description}
            if "arrow" in media:
                schema["contentMediaType"] = media  # binary: not text (OpenAPI 3.1)
            ok_content[media] = {"schema": schema}
    headers = {"X-Request-ID": {"schema": {"type": "string"}}}
    headers |= {name: {"schema": {"type": "string"}} for name in op.extra_headers}
    responses: dict[str, Any] = {
        str(op.ok_status): {"description": "Success", "headers": headers, "content": ok_content}
    }
    if op.operation_id == "submit_statement":
        # The handle in the answer is the `{id}` of the statement routes.
        responses[str(op.ok_status)]["links"] = {
            target: {"operationId": target, "parameters": {"id": "$response.body#/statement_id"}}
            for target in ("statement_status", "statement_rows", "cancel_statement")
        }
    bodies = dict(op.error_bodies)
    for status in sorted({*op.errors, 421, 500}):  # any route may refuse a foreign Host
        model = bodies.get(status, ErrorResponse)
        error_schema = {"application/json": {"schema": _schema_ref(model, refs, "serialization")}}
        description = ERROR_TEXT[status]
        if status in CODES:
            description += f". error.code: {', '.join(CODES[status])}"
        responses[str(status)] = {"description": description, "content": error_schema}
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "responses": responses,
    }
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in ("name", "id")
        if "{" + name + "}" in op.path
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "description": text, "schema": schema}
        for name, text, schema in op.query
    ]
    if op.operation_id == "submit_statement":
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 256},
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {
            "required": op.body is not NamedQueryRequest,
            "content": {"application/json": {"schema": _schema_ref(op.body, refs, "validation")}},
        }
    operation["security"] = [{"apiKey": []}, {}] if op.secured else []
    return operation


def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    inputs = {op.body for op in OPERATIONS if op.body is not None}
    outputs = {op.ok for op in OPERATIONS if op.ok is not None} | {ErrorResponse}
    outputs |= {model for op in OPERATIONS for _, model in op.error_bodies}
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation") for m in sorted(inputs, key=lambda m: m.__name__)
    ]
    pairs += [(m, "serialization") for m in sorted(outputs, key=lambda m: m.__name__)]
    refs, definitions = models_json_schema(pairs, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dbx-backend",
            "version": __version__,
            "description": "A safe, fast JSON API in front of Databricks SQL warehouses.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required on /api/* when API_KEYS is set.",
                }
            },
        },
    }


OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")


async def openapi_json(request: web.Request) -> web.Response:
    """Serve the document."""
    return web.json_response(request.app[OPENAPI])


def setup_openapi_route(app: web.Application) -> None:
    """Register `GET /openapi.json`; the document is built once, at start."""
    app[OPENAPI] = openapi_document()
    app.router.add_get("/openapi.json", openapi_json, name="openapi")
