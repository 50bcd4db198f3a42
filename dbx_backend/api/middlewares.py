"""Request context: a request id on every request and response, and one access-log line each.

Requests aiohttp answers itself, before any middleware runs (HTTP it cannot parse), get their
access-log line and metric from `MalformedRequestLog`, and no stack trace (`ProtocolLog`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from dbx_backend.keys import (
    CACHE_STATUS,
    ERROR_CODE,
    MEMORY_WAIT_MS,
    METRICS,
    REQUEST_ID,
    RETRIES,
    ROW_COUNT,
    STATEMENT_ID,
    WAREHOUSE_MS,
)
from dbx_backend.metrics import Metrics

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
        cache = request.get(CACHE_STATUS)
        memory_wait = request.get(MEMORY_WAIT_MS)
        access_log.info(
            "%s %s %s %.1fms%s%s",
            request.method,
            request.path,
            status,
            (time.perf_counter() - started) * 1000,
            f" cache={cache}" if cache else "",
            f" memory_wait={memory_wait:.0f}ms" if memory_wait else "",
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
                "cache": cache,
                "memory_wait_ms": memory_wait,
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


MALFORMED_ROUTE = "malformed"
# What a client can get wrong below HTTP routing: the request line, headers, body framing.
_CLIENT_FAULTS = (HttpProcessingError, web.RequestPayloadError)


def malformed_request_log(metrics: Metrics) -> type[AbstractAccessLogger]:
    """The access logger aiohttp calls after each response: it writes the line (and counts the
    request) only for those `request_context` never saw, the 400s for unparseable HTTP."""

    class MalformedRequestLog(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            if REQUEST_ID in request:
                return  # request_context wrote this request's line
            status = response.status
            metrics.requests.labels(MALFORMED_ROUTE, "-", str(status)).inc()
            # Nothing from the request itself: it could not be parsed, so it is not trusted.
            access_log.info(
                "malformed request %s %.1fms",
                status,
                time * 1000,
                extra={
                    "request_id": uuid.uuid4().hex,
                    "route": MALFORMED_ROUTE,
                    "status": status,
                    "duration_ms": round(time * 1000, 2),
                    "error_code": "MALFORMED_REQUEST",
                },
            )

    return MalformedRequestLog


class ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's connection log. HTTP it cannot parse is the client's mistake: one DEBUG line
    naming the problem's kind, without a stack trace (nor the bytes it quotes); anything else
    is logged as aiohttp asks (an unexpected failure stays an ERROR with its trace)."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        fault = kwargs.get("exc_info")
        if isinstance(fault, _CLIENT_FAULTS):
            super().log(logging.DEBUG, "refused a malformed request: %s", type(fault).__name__)
            return
        super().log(level, msg, *args, **kwargs)
