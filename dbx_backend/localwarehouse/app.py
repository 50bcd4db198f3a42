"""`create_warehouse_app`: wires the engine, auth, fault injection and routes; does no I/O.

One middleware records every request, applies any scripted fault for its endpoint, checks the
bearer token on API routes and turns `ApiError` into the standard error body.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiohttp import web, web_response
from aiohttp.typedefs import Handler, Middleware

from dbx_backend.hosts import allowlist_for
from dbx_backend.localwarehouse import download, oidc, routes, warehouses
from dbx_backend.localwarehouse.config import WarehouseConfig
from dbx_backend.localwarehouse.engine import Engine
from dbx_backend.localwarehouse.errors import ApiError
from dbx_backend.localwarehouse.faults import ENDPOINTS, Fault, FaultInjector
from dbx_backend.localwarehouse.keys import (
    CLOCK,
    CONFIG,
    ENGINE,
    FAULTS,
    POWER,
    SEEN,
    SIGNER,
    TOKENS,
    SeenRequest,
)
from dbx_backend.localwarehouse.links import LinkSigner
from dbx_backend.localwarehouse.oauth import TokenStore
from dbx_backend.localwarehouse.power import Power
from dbx_backend.localwarehouse.responses import error_body

SWEEP_INTERVAL_S = 30.0
_AUTHENTICATED_PREFIXES = ("/api/", "/_admin/")


def create_warehouse_app(
    config: WarehouseConfig,
    *,
    clock: Callable[[], float] = time.time,
    faults: FaultInjector | None = None,
    seen: list[SeenRequest] | None = None,
) -> web.Application:
    """The local warehouse as an aiohttp application; the engine starts with the app."""
    # `Server` names no versions: aiohttp has no setting for its `Python/3.x aiohttp/3.x`, and
    # every response it prepares (its own 400s for unparseable HTTP too) reads this value.
    web_response.SERVER_SOFTWARE = "dbx-backend"  # type: ignore[attr-defined]
    app = web.Application(
        middlewares=[_host_middleware(config), _warehouse_middleware],
        client_max_size=17 * 1024**2,
    )
    app[CONFIG] = config
    app[CLOCK] = clock
    app[FAULTS] = faults if faults is not None else FaultInjector()
    app[SEEN] = seen if seen is not None else []
    app[TOKENS] = TokenStore(config.token, config.oauth_clients, config.oauth_token_ttl_s, clock)
    app[SIGNER] = LinkSigner(config.link_expiry_s, clock)
    app.cleanup_ctx.append(_engine_ctx)
    routes.add_routes(app)
    warehouses.add_routes(app)
    download.add_routes(app)
    oidc.add_routes(app)
    if config.admin_enabled:
        app.router.add_post("/_admin/faults", _admin_faults, name="admin_faults")
    return app


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    engine = await asyncio.to_thread(Engine, app[CONFIG], loop, app[CLOCK])
    app[ENGINE] = engine
    app[POWER] = power = Power(app[CONFIG], engine, loop, app[CLOCK])

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            engine.sweep()

    sweeper = asyncio.create_task(sweep_forever())
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        power.close()
        await asyncio.to_thread(engine.close)


def _host_middleware(config: WarehouseConfig) -> Middleware:
    """Refuse a `Host` that is not this machine's when bound to loopback (DNS rebinding)."""
    allowlist = allowlist_for(config.host, config.allowed_hosts)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if allowlist is None or allowlist.allows(request.headers.get("Host")):
            return await handler(request)
        message = "This warehouse answers only requests addressed to a loopback host name."
        return routes.json_response(error_body("BAD_REQUEST", message), 421)

    return middleware


def _endpoint(request: web.Request) -> str | None:
    name = request.match_info.route.name
    return name.removesuffix("_slash") if name else None


async def _record(request: web.Request, endpoint: str | None) -> None:
    body: Any = None
    if request.can_read_body and request.content_type == "application/json":
        with contextlib.suppress(orjson.JSONDecodeError):
            body = orjson.loads(await request.read())
    request.app[SEEN].append(
        SeenRequest(
            method=request.method,
            path=request.path_qs,
            endpoint=endpoint,
            authorized="Authorization" in request.headers,
            json=body,
        )
    )


def _authenticate(request: web.Request) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "UNAUTHENTICATED",
            "Credential was not sent or was of an unsupported type for this API.",
        )
    if not request.app[TOKENS].accepts(token.strip()):
        raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")


def _fault_response(fault: Fault) -> web.Response:
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    if fault.kind == "status":
        body = orjson.dumps(error_body(fault.error_code or "UNKNOWN", fault.message or ""))
        return web.Response(
            status=fault.status_code, body=body, content_type="application/json", headers=headers
        )
    return web.Response(
        status=fault.status_code,
        body=fault.text.encode(),
        headers={**headers, "Content-Type": fault.content_type},
    )


def _drop_connection(request: web.Request) -> web.Response:
    """Close the socket with no answer, as a crashed proxy would; the client sees a reset."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError  # aiohttp ends the request quietly; nothing can be written


@web.middleware
async def _warehouse_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    endpoint = _endpoint(request)
    await _record(request, endpoint)
    fault = request.app[FAULTS].take(endpoint) if endpoint in ENDPOINTS else None
    if fault is not None:
        if fault.kind == "delay":
            await asyncio.sleep(fault.delay_s)
        elif fault.kind == "drop" and not fault.after_handler:
            return _drop_connection(request)
        elif fault.kind in ("status", "body"):
            return _fault_response(fault)
    try:
        if request.path.startswith(_AUTHENTICATED_PREFIXES):
            _authenticate(request)
            # Every API call looks at the warehouse, so a start or an idle stop that is due
            # happens now (a test's fake clock drives them this way).
            request.app[POWER].refresh()
        response = await handler(request)
    except ApiError as exc:
        response = routes.json_response(error_body(exc.error_code, exc.message), exc.status)
    except web.HTTPNotFound:
        message = f"No API found for '{request.method} {request.path}'"
        response = routes.json_response(error_body("ENDPOINT_NOT_FOUND", message), 404)
    if fault is not None and fault.kind == "drop":
        return _drop_connection(request)
    return response


async def _admin_faults(request: web.Request) -> web.Response:
    """POST /_admin/faults: `{"endpoint", "fault": {...}, "times"?, "after"?}` or
    `{"clear": true | "<endpoint>"}`; only present when `admin_enabled`."""
    body = await routes.read_json(request)
    try:
        _script_faults(request.app[FAULTS], body)
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", str(exc)) from None
    return routes.json_response({})


def _script_faults(faults: FaultInjector, body: Any) -> None:
    if not isinstance(body, dict):
        raise TypeError("body must be an object")
    if "clear" in body:
        faults.clear(None if body["clear"] is True else str(body["clear"]))
        return
    times = body.get("times", 1)
    faults.add(
        str(body.get("endpoint")),
        Fault.from_json(body.get("fault")),
        times=None if times is None else int(times),
        after=int(body.get("after", 0)),
    )
