"""Request context: a request id on every request and response, and one access-log line each."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from dbx_backend.keys import (
    ERROR_CODE,
    METRICS,
    REQUEST_ID,
    RETRIES,
    ROW_COUNT,
    STATEMENT_ID,
    WAREHOUSE_MS,
)

access_log = logging.getLogger("dbx_backend.access")
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_for(request: web.Request) -> str:
    """The caller's X-Request-ID when it is sane, otherwise a new one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _SANE_REQUEST_ID.match(given) else uuid.uuid4().hex


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Assign the request id, echo it, and write the access-log line (never SQL or values)."""
    request_id = request_id_for(request)
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
    except asyncio.CancelledError:
        status = 499  # the client closed the connection before the answer
        raise
    else:
        if not response.prepared:  # a streaming handler sets it before its first byte
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        _observe(request, status, time.perf_counter() - started, response)
        access_log.info(
            "%s %s %s %.1fms",
            request.method,
            request.path,
            status,
            (time.perf_counter() - started) * 1000,
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "route": _route_name(request),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "statement_id": request.get(STATEMENT_ID),
                "rows": request.get(ROW_COUNT),
                "retries": request.get(RETRIES),
                "warehouse_ms": request.get(WAREHOUSE_MS),
                "error_code": request.get(ERROR_CODE),
            },
        )


def _observe(
    request: web.Request, status: int, seconds: float, response: web.StreamResponse | None
) -> None:
    metrics = request.app.get(METRICS)
    if metrics is None:
        return
    route, method = _route_name(request), request.method
    metrics.requests.labels(route, method, str(status)).inc()
    metrics.request_seconds.labels(route, method).observe(seconds)
    metrics.rows.inc(request.get(ROW_COUNT) or 0)
    if response is not None and response.body_length:
        metrics.bytes.inc(response.body_length)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
