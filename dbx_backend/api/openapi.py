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
from dbx_backend.api.errors import ERROR_RESPONSES, INTERNAL, MAX_RETRY_AFTER_S
from dbx_backend.api.models import (
    MAX_SAFE_INT,
    CancelSent,
    ErrorResponse,
    HealthResponse,
    NamedQueryList,
    NamedQueryRequest,
    NdjsonFooter,
    NdjsonHeader,
    NotReadyResponse,
    OpenApiDocument,
    QueryRequest,
    QueryResponse,
    ReadyResponse,
    RowsPage,
    StatementStatus,
    StatementSubmitted,
    SubmitRequest,
)
from dbx_backend.api.statements import MAX_PAGE_ROWS

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "Invalid request, SQL error or SQL the parser cannot read",
    401: "Missing or wrong API key (when API_KEYS is set)",
    403: "Statement not allowed (read-only), ad-hoc SQL disabled, or a CORS preflight from an "
    "origin not in CORS_ALLOW_ORIGINS",
    404: "No such route, named query or statement handle",
    405: "The path does not take this method; Allow lists the ones it takes",
    408: "The request body did not arrive within BODY_READ_TIMEOUT_S",
    409: "The statement has not SUCCEEDED, so it has no rows to read (yet); error.state says "
    "where it is",
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
# Every path may answer these: a foreign Host, a method it does not take, a failure.
ALWAYS_ERRORS = (405, 421, 500)
NDJSON = "application/x-ndjson"
STREAMS = {
    NDJSON: "One JSON document per line: an NdjsonHeader, one NdjsonRow per row, then an "
    "NdjsonFooter; or, if the stream fails after it began, a last ErrorResponse line (with "
    "statement_id) and no footer. x-item-schema describes the lines.",
    "text/csv": "RFC 4180: a header row, then rows. A failure mid-stream cuts the body short.",
    "application/vnd.apache.arrow.stream": "An Arrow IPC stream: the schema (each field's "
    "metadata has type_text and type_name; the schema's has statement_id, total_row_count and "
    "truncated), then record batches as chunks arrive, then the end-of-stream marker. Types: "
    "the README's type table. A failure mid-stream ends the body inside an unfinished message "
    "(so an Arrow reader fails) followed by the error envelope as JSON, and cuts the body short.",
}
HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "Ties the response to the service's log line (yours, if you sent a sane "
        "one).",
        "schema": {"type": "string", "maxLength": 128},
    },
    "Server-Timing": {
        "description": "Where the time went, in milliseconds: wait (for the result), fetch and "
        "convert; streams send wait here and the rest in their footer line.",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again, when known.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RETRY_AFTER_S},
    },
    "Allow": {"description": "The methods the path takes.", "schema": {"type": "string"}},
    "WWW-Authenticate": {"description": "Bearer.", "schema": {"type": "string"}},
    "Content-Disposition": {
        "description": "text/csv only: attachment; filename=...",
        "schema": {"type": "string"},
    },
    "ETag": {
        "description": "The answer's version (per format); send it back in If-None-Match.",
        "schema": {"type": "string"},
    },
    "Age": {
        "description": "Seconds since the answer was computed (0 for a fresh run).",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INT},
    },
    "Cache-Control": {
        "description": "private, max-age=N for a stored answer; private, no-store otherwise.",
        "schema": {"type": "string"},
    },
}
CACHED_ANSWER_HEADERS = ("Server-Timing", "ETag", "Age", "Cache-Control")
# Headers a caller may send to steer the result cache (README, "Result cache").
CACHE_PARAMETERS = (
    {
        "name": "Cache-Control",
        "in": "header",
        "required": False,
        "description": "no-cache (run fresh, store), no-store (run fresh, store nothing), "
        "max-age=N (an answer at most N seconds old will do), only-if-cached (504 NOT_CACHED "
        "rather than run); other directives are ignored.",
        "schema": {"type": "string"},
    },
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "An ETag of this answer you hold: 304 Not Modified when it still is.",
        "schema": {"type": "string"},
    },
)
ERROR_HEADERS = {401: ("WWW-Authenticate",), 405: ("Allow",), 429: ("Retry-After",)}
ERROR_HEADERS[503] = ("Retry-After",)
# Any JSON value, for the cells of rows.
JSON_VALUE = {
    "title": "JsonValue",
    "description": "Any JSON value; a cell's form is given by its column's json_type.",
    "anyOf": [
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        # Not recursive: TypeScript cannot declare a schema that refers to itself this way.
        {"type": "array", "items": {}},
        {"type": "object", "additionalProperties": {}},
    ],
}
NDJSON_ROW = {
    "title": "NdjsonRow",
    "description": "One row of an NDJSON result: its cells in column order.",
    "type": "array",
    "items": {"$ref": REF.format(model="JsonValue")},
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
    # Answered through the result cache: Cache-Control / If-None-Match taken, 304 possible.
    cached: bool = False
    # Error statuses whose body is not the plain ErrorResponse.
    error_bodies: tuple[tuple[int, type[BaseModel]], ...] = ()


_ID = {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INT}
_FIRST_PAGE = {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_ROWS, "default": 1000}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_ROWS, "default": 1000}
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
    Operation(
        "get", "/openapi.json", "openapi", "This document.", ok=OpenApiDocument, secured=False
    ),
    Operation(
        "post",
        "/api/query",
        "query",
        "Run one SQL statement and return its result.",
        body=QueryRequest,
        ok=QueryResponse,
        errors=RUN_ERRORS,
        streams=True,
        extra_headers=CACHED_ANSWER_HEADERS,
        cached=True,
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
        extra_headers=CACHED_ANSWER_HEADERS,
        cached=True,
    ),
    Operation(
        "post",
        "/api/statements",
        "submit_statement",
        "Start a statement; answers a handle at once, or when it ends within wait_s. "
        "Optional Idempotency-Key.",
        body=SubmitRequest,
        ok_status=202,
        ok=StatementSubmitted,
        errors=RUN_ERRORS,
    ),
    Operation(
        "get",
        "/api/statements/{id}",
        "statement_status",
        "A statement's state, 200 whatever it is: elapsed_ms while it runs, its columns and "
        "first page of rows once SUCCEEDED, its error once FAILED.",
        ok=StatementStatus,
        errors=HANDLE_ERRORS,
        query=(("limit", "Rows in the first page.", _FIRST_PAGE),),
    ),
    Operation(
        "get",
        "/api/statements/{id}/rows",
        "statement_rows",
        "A page of a SUCCEEDED statement's rows; 409 before it has SUCCEEDED.",
        ok=RowsPage,
        errors=(*HANDLE_ERRORS, 409),
        query=(
            ("offset", "First row, 0-based.", _ID),
            ("limit", "Rows in the page.", _LIMIT),
        ),
    ),
    Operation(
        "delete",
        "/api/statements/{id}",
        "cancel_statement",
        "Ask the warehouse to cancel the statement; poll to learn whether it did.",
        ok_status=202,
        ok=CancelSent,
        errors=HANDLE_ERRORS,
    ),
)


def _schema_ref(model: type[BaseModel], refs: dict[Any, Any], mode: str) -> dict[str, Any]:
    return dict(refs[(model, mode)])


def _headers(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: HEADERS[name] for name in ("X-Request-ID", *names)}


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    ok_content: dict[str, Any]
    if op.ok is not None:
        ok_content = {op.ok_media: {"schema": _schema_ref(op.ok, refs, "serialization")}}
    elif op.ok_media == "application/json":
        ok_content = {op.ok_media: {"schema": {"type": "object"}}}
    else:
        ok_content = {op.ok_media: {"schema": {"type": "string"}}}
    ok_headers = op.extra_headers
    if op.streams:
        for media, description in STREAMS.items():
            schema = {"type": "string", "description": description}
            if "arrow" in media:
                schema["contentMediaType"] = media  # binary: not text (OpenAPI 3.1)
            ok_content[media] = {"schema": schema}
        ok_content[NDJSON]["x-item-schema"] = {
            "oneOf": [
                {"$ref": REF.format(model=name)}
                for name in ("NdjsonHeader", "NdjsonRow", "NdjsonFooter", "ErrorResponse")
            ]
        }
        ok_headers = (*ok_headers, "Content-Disposition")
    responses: dict[str, Any] = {
        str(op.ok_status): {
            "description": "Success",
            "headers": _headers(ok_headers),
            "content": ok_content,
        }
    }
    if op.operation_id == "submit_statement":
        # The handle in the answer is the `{id}` of the statement routes.
        responses[str(op.ok_status)]["links"] = {
            target: {"operationId": target, "parameters": {"id": "$response.body#/statement_id"}}
            for target in ("statement_status", "statement_rows", "cancel_statement")
        }
    bodies = dict(op.error_bodies)
    for status in sorted({*op.errors, *ALWAYS_ERRORS}):
        model = bodies.get(status, ErrorResponse)
        error_schema = {"application/json": {"schema": _schema_ref(model, refs, "serialization")}}
        description = ERROR_TEXT[status]
        if status in CODES:
            description += f". error.code: {', '.join(CODES[status])}"
        responses[str(status)] = {
            "description": description,
            "headers": _headers(ERROR_HEADERS.get(status, ())),
            "content": error_schema,
        }
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
    if op.cached:
        parameters += [dict(parameter) for parameter in CACHE_PARAMETERS]
        responses["304"] = {
            "description": "Not Modified: the If-None-Match ETag is still the answer",
            "headers": _headers(CACHED_ANSWER_HEADERS),
        }
        responses = dict(sorted(responses.items()))
        operation["responses"] = responses
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
    outputs |= {NdjsonHeader, NdjsonFooter}
    outputs |= {model for op in OPERATIONS for _, model in op.error_bodies}
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation") for m in sorted(inputs, key=lambda m: m.__name__)
    ]
    pairs += [(m, "serialization") for m in sorted(outputs, key=lambda m: m.__name__)]
    refs, definitions = models_json_schema(pairs, ref_template=REF)
    schemas = definitions.get("$defs", {}) | {"JsonValue": JSON_VALUE, "NdjsonRow": NDJSON_ROW}
    # Every code an error may carry, from the one exception -> response table.
    codes = sorted({code for found in CODES.values() for code in found})
    schemas["ErrorDetail"]["properties"]["code"]["enum"] = codes
    schemas = dict(sorted(schemas.items()))
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
            "schemas": schemas,
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
