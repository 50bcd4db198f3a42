"""`create_app(settings)`: wire settings, long-lived resources, routes and middlewares; no I/O."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web, web_response

from dbx_backend.api.console import setup_console_routes
from dbx_backend.api.cors import preflight_guard, setup_cors
from dbx_backend.api.errors import error_middleware
from dbx_backend.api.guards import (
    QueryLimiter,
    api_key_middleware,
    host_middleware,
    load_api_keys,
)
from dbx_backend.api.health import setup_health_routes
from dbx_backend.api.middlewares import (
    ProtocolLog,
    access_log,
    malformed_request_log,
    request_context,
)
from dbx_backend.api.openapi import setup_openapi_route
from dbx_backend.api.routes import setup_routes
from dbx_backend.api.shutdown import IN_FLIGHT, InFlight, shutdown_middleware
from dbx_backend.api.statements import setup_statement_routes
from dbx_backend.config import Settings
from dbx_backend.engine.query_service import PollSchedule, QueryService, Sleep
from dbx_backend.keys import (
    LIMITER,
    METRICS,
    QUERIES,
    QUERY_SERVICE,
    READINESS,
    SECRETS,
    SETTINGS,
    WAREHOUSE,
)
from dbx_backend.metrics import Metrics
from dbx_backend.queries import load_queries
from dbx_backend.readiness import Readiness
from dbx_backend.warehouse.auth import TokenProvider
from dbx_backend.warehouse.client import WarehouseClient
from dbx_backend.warehouse.retry import RetryPolicy

SERVER_NAME = "dbx-backend"


def _secrets(settings: Settings) -> list[str]:
    """Strings that must never reach a response body."""
    values = [settings.databricks_host.partition("://")[2]]
    for secret in (settings.databricks_token, settings.databricks_client_secret):
        if secret is not None:
            values.append(secret.get_secret_value())
    return values


def hide_server_version() -> None:
    """Answer `Server: dbx-backend` instead of aiohttp's `Python/3.x aiohttp/3.x`.

    aiohttp has no setting for it; every response it prepares, including the 400s it writes
    for HTTP it cannot parse (which no middleware or signal sees), reads this module value.
    """
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]


def create_app(
    settings: Settings,
    *,
    retry_policy: RetryPolicy | None = None,
    poll_schedule: PollSchedule | None = None,
    sleep: Sleep = asyncio.sleep,
    auth: TokenProvider | None = None,
) -> web.Application:
    """Build the application; resources open and close with the app's `cleanup_ctx`."""
    secrets = _secrets(settings)
    hide_server_version()
    metrics = Metrics()
    in_flight = InFlight()
    app = web.Application(
        middlewares=[
            request_context,
            error_middleware(secrets),
            shutdown_middleware(in_flight),
            host_middleware(settings),
            preflight_guard(settings.cors_allow_origins),
            api_key_middleware(load_api_keys(settings)),
        ],
        client_max_size=settings.max_body_bytes,
        handler_args={
            "auto_decompress": False,  # bodies are decoded where they are read (api/bodies.py)
            "access_log": access_log,
            "access_log_class": malformed_request_log(metrics),
            "logger": ProtocolLog(logging.getLogger("dbx_backend.http")),
        },
    )
    app[SETTINGS] = settings
    app[IN_FLIGHT] = in_flight
    app[SECRETS] = tuple(secrets)
    app[LIMITER] = QueryLimiter(settings.max_concurrent_queries)
    app[QUERIES] = load_queries(settings.queries_dir) if settings.queries_dir else {}
    app[METRICS] = metrics
    app[READINESS] = Readiness()

    async def warehouse_ctx(app: web.Application) -> AsyncIterator[None]:
        async with WarehouseClient(
            settings, policy=retry_policy, auth=auth, observer=metrics
        ) as client:
            service = QueryService(
                client,
                schedule=poll_schedule,
                sleep=sleep,
                wait_timeout_s=settings.submit_wait_timeout_s,
            )
            app[WAREHOUSE] = client
            app[QUERY_SERVICE] = service
            metrics.track(lambda: app[LIMITER].in_flight, lambda: client.auth.refreshes)
            yield
            await service.drain()

    async def readiness_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[READINESS].close()  # before the warehouse client closes

    app.cleanup_ctx.append(warehouse_ctx)
    app.cleanup_ctx.append(readiness_ctx)
    setup_health_routes(app)
    setup_openapi_route(app)
    setup_routes(app)
    setup_statement_routes(app, settings)
    if settings.console:
        setup_console_routes(app)
    setup_cors(app, settings.cors_allow_origins)
    return app
