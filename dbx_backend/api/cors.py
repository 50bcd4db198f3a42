"""CORS: the web app's origins may call the API from a browser; a preflight from any other
origin is refused with an answer that says which variable to change."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp_cors
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from dbx_backend.api.middlewares import REQUEST_ID_HEADER

log = logging.getLogger("dbx_backend.api")
# An Origin header can be kilobytes long; messages and logs show this much of it.
SHOWN_ORIGIN_CHARS = 200


class OriginNotAllowed(Exception):
    """A CORS preflight came from an origin that is not in `CORS_ALLOW_ORIGINS`."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        super().__init__(
            f"the origin {shown(origin)} may not call this API from a browser: "
            "add it to CORS_ALLOW_ORIGINS (comma-separated) on the service"
        )


def shown(text: str) -> str:
    """`text` quoted, cut short, with control characters escaped: safe in a message or a log."""
    cut = text[:SHOWN_ORIGIN_CHARS]
    return repr(cut) + ("..." if len(text) > len(cut) else "")


def preflight_guard(origins: tuple[str, ...]) -> Middleware:
    """Refuse a preflight from an origin not in `origins` (`*` allows every origin)."""
    allowed = frozenset(origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if (
            request.method == hdrs.METH_OPTIONS
            and origin is not None
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
            and origin not in allowed
            and "*" not in allowed
        ):
            log.warning(
                "CORS preflight from origin %s refused: it is not in CORS_ALLOW_ORIGINS",
                shown(origin),
            )
            raise OriginNotAllowed(origin)
        return await handler(request)

    return middleware


# Response headers a page on an allowed origin may read (CORS hides all others from it).
EXPOSED_HEADERS = (
    REQUEST_ID_HEADER,
    "Server-Timing",
    "Retry-After",
    "ETag",
    "Age",
    "Cache-Control",
    "Content-Disposition",
)


def setup_cors(app: web.Application, origins: tuple[str, ...]) -> None:
    """Allow the web app's origins (preflight included); other origins get no CORS headers."""
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call] # untyped library
        allow_credentials=False,
        allow_headers=(
            "Content-Type",
            "Authorization",
            REQUEST_ID_HEADER,
            "Idempotency-Key",
            "Cache-Control",
            "If-None-Match",
        ),
        expose_headers=EXPOSED_HEADERS,
        allow_methods=("GET", "POST", "DELETE"),
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    for route in list(app.router.routes()):
        cors.add(route)
    app.on_response_prepare.append(_timing_allowed_for(frozenset(origins)))
    _skip_without_origin(app)


def _skip_without_origin(app: web.Application) -> None:
    """aiohttp_cors adds CORS headers to a response only when the request has an `Origin`, but
    looks the route's configuration up first, on every response; a request without one (a
    server calling the API, a cache hit from the web app's backend) skips that work here."""
    signals = app.on_response_prepare
    for index, handler in enumerate(signals):
        owner = getattr(handler, "__self__", None)  # the bound method of aiohttp_cors's config
        if type(owner).__module__.startswith("aiohttp_cors."):
            signals[index] = _with_origin_only(handler)


def _with_origin_only(
    handler: Callable[[web.Request, web.StreamResponse], Awaitable[object]],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[object]]:
    async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if hdrs.ORIGIN in request.headers:
            await handler(request, response)

    return on_response_prepare


def _timing_allowed_for(
    origins: frozenset[str],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """Send `Timing-Allow-Origin` to allowed origins, so their pages' Resource Timing entries
    carry this service's Server-Timing (browsers drop it for other cross-origin responses)."""

    async def add_header(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and (origin in origins or "*" in origins):
            response.headers["Timing-Allow-Origin"] = origin

    return add_header
