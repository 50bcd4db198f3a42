"""`create_app(settings)`: wire settings, long-lived resources, routes and middlewares; no I/O."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web, web_response

from dbx_backend.allocator import ReleaseWhenIdle
from dbx_backend.api.console import setup_console_routes
from dbx_backend.api.cors import preflight_guard, setup_cors
from dbx_backend.api.errors import error_middleware
from dbx_backend.api.guards import api_key_middleware, host_middleware, load_api_keys
from dbx_backend.api.health import setup_health_routes
from dbx_backend.api.middlewares import (
    ProtocolLog,
    access_log,
    malformed_request_log,
    request_context,
)
from dbx_backend.api.openapi import setup_openapi_route
from dbx_backend.api.routes import setup_routes
from dbx_backend.api.shutdown import shutdown_middleware
from dbx_backend.api.statements import setup_statement_routes
from dbx_backend.config import Settings
from dbx_backend.engine.cache_store import MemoryStore
from dbx_backend.engine.coalesce import Coalescer
from dbx_backend.engine.gate import Gate
from dbx_backend.engine.limiter import QueryLimiter
from dbx_backend.engine.memory import MemoryBudget
from dbx_backend.engine.query_service import PollSchedule, QueryService, Sleep
from dbx_backend.engine.result_cache import ResultCache
from dbx_backend.engine.shared_state import LocalState, SharedState
from dbx_backend.engine.tasks import TaskOwner
from dbx_backend.engine.warehouse_state import WarehouseTracker
from dbx_backend.inflight import InFlight
from dbx_backend.keys import (
    IDEMPOTENCY,
    IN_FLIGHT,
    LIMITER,
    MEMORY_BUDGET,
    METRICS,
    QUERIES,
    QUERY_SERVICE,
    READINESS,
    RESULT_CACHE,
    SECRETS,
    SETTINGS,
    SHARED_STATE,
    TASKS,
    WAREHOUSE_TRACKER,
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
    # After a second with no request, the heap's free memory goes back to the system.
    release_when_idle = ReleaseWhenIdle()
    in_flight = InFlight(release_when_idle)
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
    app[QUERIES] = queries = load_queries(settings.queries_dir) if settings.queries_dir else {}
    app[METRICS] = metrics
    app[TASKS] = tasks = TaskOwner()
    # One memory budget: the engine's answers and streams and the cache's store share it.
    memory = MemoryBudget(
        settings.memory_budget_mb * 1024 * 1024, wait_s=settings.memory_wait_s, observer=metrics
    )
    metrics.track_memory(memory)
    app[MEMORY_BUDGET] = memory
    app[READINESS] = Readiness(tasks=tasks)

    async def warehouse_ctx(app: web.Application) -> AsyncIterator[None]:
        async with WarehouseClient(
            settings, policy=retry_policy, auth=auth, observer=metrics
        ) as client:
            app[QUERY_SERVICE] = QueryService(
                client,
                schedule=poll_schedule,
                sleep=sleep,
                wait_timeout_s=settings.submit_wait_timeout_s,
                call_timeout_s=settings.query_timeout_s,
                gate=Gate.from_settings(settings, queries),
                tasks=tasks,
                memory=memory,
            )
            metrics.track(lambda: app[LIMITER].in_flight, lambda: client.auth.refreshes)
            yield
            await tasks.drain()  # cancels and submits still out, before the client closes

    async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
        store = MemoryStore(settings.cache_max_bytes, settings.cache_max_entry_bytes, budget=memory)
        local = LocalState(store)
        state: SharedState = local
        if settings.cache_url is not None:
            # The Redis client (several MiB of modules) is loaded only when one is configured.
            from dbx_backend.engine.redis_state import RedisState

            state = RedisState(
                settings.cache_url.get_secret_value(),
                local,
                timeout_s=settings.cache_redis_timeout_s,
                on_failure=metrics.cache_backend_failed,
            )
        tracker = WarehouseTracker(
            app[QUERY_SERVICE].client,  # the Warehouses API: state and start
            state,
            warehouse_id=settings.warehouse_id,
            auto_start=settings.warehouse_auto_start,
            estimate_s=settings.warehouse_start_estimate_s,
            on_start=metrics.warehouse_start_issued,
        )
        cache = ResultCache(
            state,
            Coalescer(state, max_result_bytes=settings.cache_max_entry_bytes),
            tracker,
            stale_if_error_s=settings.cache_stale_if_error_s,
            flight_timeout_s=settings.max_query_timeout_s,
            observer=metrics,
            tasks=tasks,
        )
        app[SHARED_STATE], app[WAREHOUSE_TRACKER], app[RESULT_CACHE] = state, tracker, cache
        app[IDEMPOTENCY].share(state)  # Idempotency-Keys claimed across replicas with Redis
        metrics.track_cache(
            lambda: local.store.stats.bytes_held,
            lambda: local.store.stats.evictions,
            lambda: tracker.last_state,
        )
        yield
        await cache.drain()
        await state.close()

    async def readiness_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[READINESS].close()  # before the warehouse client closes
        release_when_idle.close()

    app.cleanup_ctx.append(warehouse_ctx)
    app.cleanup_ctx.append(cache_ctx)
    app.cleanup_ctx.append(readiness_ctx)
    setup_health_routes(app)
    setup_openapi_route(app)
    setup_routes(app)
    setup_statement_routes(app, settings)
    if settings.console:
        setup_console_routes(app)
    setup_cors(app, settings.cors_allow_origins)
    return app
