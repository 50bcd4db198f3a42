"""Exceptions -> HTTP responses: one table, looked up along the class hierarchy, one middleware.

Only this package knows HTTP status codes. 4xx messages help the caller and are shown (with
hosts, URLs and tokens removed); 5xx messages are replaced by a fixed text, and the request id
ties the response to the log line that has the details.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import ValidationError

from dbx_backend import queries, sqlpolicy
from dbx_backend.api import guards
from dbx_backend.api.cors import OriginNotAllowed
from dbx_backend.engine import (
    AdhocSqlDisabled,
    IdempotencyKeyReused,
    InvalidCacheControl,
    InvalidQuery,
    MemoryBusy,
    NotAdmitted,
    NotCached,
    ParamOutOfRange,
    SqlTooLarge,
    TooManyQueries,
    TooManyStatements,
    UnknownHandle,
    WarehouseNotRunning,
    WarehouseStarting,
    WarehouseStopped,
)
from dbx_backend.keys import ERROR_CODE, REQUEST_ID, SETTINGS
from dbx_backend.readiness import NotReady
from dbx_backend.redaction import redact
from dbx_backend.warehouse import errors as dbx

log = logging.getLogger("dbx_backend.api")


class ApiError(Exception):
    """Base of the errors handlers raise on purpose; `field` names the request field at fault."""

    close_connection = False  # True when the connection cannot carry another request

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(ApiError):
    """The request body or query string is malformed."""


class PayloadTooLarge(ApiError):
    """The request body is over the configured limit."""


class MalformedBody(InvalidRequest):
    """The body's framing is broken (e.g. a bad chunk size)."""

    close_connection = True


class RequestTimeout(ApiError):
    """The request body did not arrive within `BODY_READ_TIMEOUT_S`."""

    close_connection = True


class UnsupportedEncoding(ApiError):
    """The body is sent in a `Content-Encoding` the service does not decode."""


class NotFoundError(ApiError):
    """No such route or resource."""


class MethodNotAllowed(ApiError):
    """The route exists but not for this method."""


class StatementNotReady(ApiError):
    """A statement's rows were asked for before it SUCCEEDED (or after it FAILED/CANCELED)."""

    def __init__(self, state: str) -> None:
        super().__init__(
            f"the statement is {state}: rows can be read once it has SUCCEEDED",
            field="statement_id",
        )
        self.state = state


class ShuttingDown(ApiError):
    """The process is stopping and its grace is over; the request's statement was cancelled."""

    retry_after = 1.0  # another replica (or this service, restarted) takes the retry
    may_have_run = True  # its statement, if it had one, may have run before the cancel


class ErrorRow(NamedTuple):
    """How one exception class answers."""

    status: int
    code: str
    expose_message: bool
    retryable: bool = False
    public_message: str = ""


INTERNAL = ErrorRow(500, "INTERNAL_ERROR", False, public_message="internal error")

ERROR_RESPONSES: Mapping[type[BaseException], ErrorRow] = {
    InvalidRequest: ErrorRow(400, "INVALID_REQUEST", expose_message=True),
    ValidationError: ErrorRow(400, "INVALID_REQUEST", expose_message=True),
    ParamOutOfRange: ErrorRow(400, "INVALID_PARAMS", expose_message=True),
    InvalidQuery: ErrorRow(400, "INVALID_REQUEST", expose_message=True),
    InvalidCacheControl: ErrorRow(400, "INVALID_REQUEST", expose_message=True),
    NotCached: ErrorRow(504, "NOT_CACHED", expose_message=True),
    WarehouseStarting: ErrorRow(503, "WAREHOUSE_STARTING", True, retryable=True),
    WarehouseStopped: ErrorRow(503, "WAREHOUSE_STOPPED", True, retryable=True),
    PayloadTooLarge: ErrorRow(413, "PAYLOAD_TOO_LARGE", expose_message=True),
    RequestTimeout: ErrorRow(408, "REQUEST_TIMEOUT", expose_message=True, retryable=True),
    UnsupportedEncoding: ErrorRow(415, "UNSUPPORTED_MEDIA_TYPE", expose_message=True),
    NotFoundError: ErrorRow(404, "NOT_FOUND", expose_message=True),
    UnknownHandle: ErrorRow(404, "NOT_FOUND", expose_message=True),
    IdempotencyKeyReused: ErrorRow(400, "INVALID_REQUEST", expose_message=True),
    MethodNotAllowed: ErrorRow(405, "METHOD_NOT_ALLOWED", expose_message=True),
    StatementNotReady: ErrorRow(409, "STATEMENT_NOT_READY", expose_message=True),
    guards.Unauthorized: ErrorRow(401, "UNAUTHORIZED", expose_message=True),
    guards.HostNotAllowed: ErrorRow(421, "HOST_NOT_ALLOWED", expose_message=True),
    queries.ParamError: ErrorRow(400, "INVALID_PARAMS", expose_message=True),
    AdhocSqlDisabled: ErrorRow(403, "ADHOC_SQL_DISABLED", expose_message=True),
    NotAdmitted: INTERNAL,  # a route that went around the gate: a bug, and nothing was sent
    OriginNotAllowed: ErrorRow(403, "ORIGIN_NOT_ALLOWED", expose_message=True),
    sqlpolicy.StatementNotAllowed: ErrorRow(403, "STATEMENT_NOT_ALLOWED", expose_message=True),
    sqlpolicy.UnparsableSql: ErrorRow(400, "SQL_PARSE_ERROR", expose_message=True),
    SqlTooLarge: ErrorRow(413, "SQL_TOO_LARGE", expose_message=True),
    TooManyQueries: ErrorRow(429, "TOO_MANY_QUERIES", True, retryable=True),
    MemoryBusy: ErrorRow(503, "SERVICE_BUSY", expose_message=True, retryable=True),
    TooManyStatements: ErrorRow(429, "TOO_MANY_STATEMENTS", True, retryable=True),
    NotReady: ErrorRow(503, "NOT_READY", True, retryable=True),
    ShuttingDown: ErrorRow(503, "SHUTTING_DOWN", expose_message=True, retryable=True),
    sqlpolicy.SqlPolicyError: ErrorRow(400, "SQL_NOT_ACCEPTED", expose_message=True),
    ApiError: ErrorRow(400, "INVALID_REQUEST", expose_message=True),
    dbx.StatementFailed: ErrorRow(400, "SQL_ERROR", expose_message=True),
    dbx.StatementTimedOut: ErrorRow(
        504,
        "QUERY_TIMEOUT",
        False,
        public_message="the query ran past its timeout and was "
        "cancelled; narrow it or raise timeout_s",
    ),
    dbx.WarehouseUnavailable: ErrorRow(
        503,
        "WAREHOUSE_UNAVAILABLE",
        False,
        retryable=True,
        public_message="the warehouse is unavailable; try again later",
    ),
    dbx.StatementCanceled: ErrorRow(
        502,
        "STATEMENT_CANCELED",
        False,
        public_message="the statement was cancelled on the warehouse",
    ),
    dbx.StatementClosed: ErrorRow(
        502,
        "RESULT_UNAVAILABLE",
        False,
        public_message="the statement's result is no longer available on the warehouse",
    ),
    dbx.WarehouseError: ErrorRow(
        502, "WAREHOUSE_ERROR", False, public_message="the warehouse answered with an error"
    ),
}
# A Retry-After beyond a day is not advice a client can use; the header says at most this.
MAX_RETRY_AFTER_S = 86_400


def response_for(exc: BaseException) -> ErrorRow | None:
    """The row for the most specific class of `exc` (walks the MRO)."""
    return next((ERROR_RESPONSES[c] for c in type(exc).__mro__ if c in ERROR_RESPONSES), None)


def _validation_message(exc: ValidationError) -> tuple[str, str | None]:
    problems, first_field = [], None
    for error in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(part) for part in error["loc"]) or "body"
        first_field = first_field or loc
        kind = error["type"]
        if kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            message = "is not a known field"
        else:
            message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{loc}: {message}")
    return "; ".join(problems), first_field


def is_retryable(exc: BaseException, row: ErrorRow, *, read_only: bool) -> bool:
    """Whether sending the same request again may succeed without running a write twice.

    In read-only mode a repeat can only read again. Otherwise a failure after a submit that
    may have started the statement is not retryable: the caller must look (by `statement_id`,
    in the query history) before trying again.
    """
    if not row.retryable:
        return False
    may_have_run = isinstance(exc, dbx.WarehouseError | ShuttingDown) and exc.may_have_run
    return read_only or not may_have_run


def error_body(
    exc: BaseException,
    row: ErrorRow,
    request_id: str,
    secrets: Iterable[str] = (),
    *,
    read_only: bool,
    statement_id: str | None = None,
) -> dict[str, Any]:
    """The `{"error": {...}}` envelope for `exc`; `statement_id` when `exc` names none."""
    field = getattr(exc, "field", None)
    if isinstance(exc, InvalidCacheControl):
        field = "Cache-Control"
    if isinstance(exc, queries.ParamError | ParamOutOfRange):
        field = f"params.{exc.param}"
    if isinstance(exc, ValidationError):
        message, field = _validation_message(exc)
    elif row.expose_message:
        message = str(getattr(exc, "message", None) or exc)
    else:
        message = row.public_message
    detail: dict[str, Any] = {
        "code": row.code,
        # A refused origin is named as the caller sent it: it is their header, not our URL.
        "message": redact(message, secrets, urls=not isinstance(exc, OriginNotAllowed)),
        "request_id": request_id,
        "retryable": is_retryable(exc, row, read_only=read_only),
    }
    if isinstance(exc, MemoryBusy):  # its statement ran, and was cancelled unread
        statement_id = exc.statement_id or statement_id
    if isinstance(exc, dbx.WarehouseError):
        statement_id = exc.statement_id or statement_id
        if exc.sql_state and row.expose_message:
            detail["sql_state"] = exc.sql_state
    if statement_id:
        detail["statement_id"] = statement_id
    if field:
        detail["field"] = field
    if isinstance(exc, StatementNotReady):
        detail["state"] = exc.state
    if isinstance(exc, WarehouseNotRunning):  # what the front end shows while it starts
        detail["warehouse"] = exc.warehouse.to_json()
    if isinstance(exc, NotReady):  # `/ready` answers its report beside the error
        return {**exc.report.to_json(), "error": detail}
    return {"error": detail}


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response serialized with orjson."""
    return web.Response(
        body=orjson.dumps(payload),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(
    exc: BaseException, request: web.Request, secrets: Iterable[str] = ()
) -> web.Response:
    """Map `exc` to its response and log it once: 5xx with a stack trace, 4xx at INFO."""
    row = response_for(exc) or INTERNAL
    request_id = request.get(REQUEST_ID, "-")
    settings = request.app.get(SETTINGS)
    read_only = settings is not None and settings.read_only
    body = error_body(exc, row, request_id, secrets, read_only=read_only)
    if row.status >= 500:
        # A request a planned shutdown interrupts is expected: a warning, not an error.
        level = logging.WARNING if isinstance(exc, ShuttingDown) else logging.ERROR
        log.log(
            level,
            "request %s failed with %s: %s",
            request_id,
            row.code,
            redact(str(exc), secrets),
            exc_info=row is INTERNAL,
        )
    else:
        log.info("request %s refused with %s", request_id, row.code)
    headers = {}
    if row.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="dbx-backend"'
    retry_after = getattr(exc, "retry_after", None)
    if row.status in (429, 503) and retry_after and body["error"]["retryable"]:
        headers["Retry-After"] = str(min(MAX_RETRY_AFTER_S, max(1, round(retry_after))))
    request[ERROR_CODE] = row.code
    response = json_response(body, row.status, headers)
    if getattr(exc, "close_connection", False):
        response.force_close()  # answer, then close: the rest of the body is not read
    return response


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> ApiError:
    if exc.status == 404:
        return NotFoundError(f"no such route: {request.method} {request.path}")
    if exc.status == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
    if exc.status == 413:
        return PayloadTooLarge(f"the request body is larger than {request.client_max_size} bytes")
    return InvalidRequest(exc.reason)


def error_middleware(secrets: Iterable[str]) -> Middleware:
    """The one middleware that turns every exception into the error envelope."""
    redacted = tuple(s for s in secrets if s)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(_from_http_exception(exc, request), request, redacted)
            if "Allow" in exc.headers:  # a 405 says which methods the route takes (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception as exc:
            return error_response(exc, request, redacted)

    return middleware
