"""Operational endpoints: liveness, readiness (the warehouse answers), Prometheus metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from dbx_backend.keys import METRICS, QUERY_SERVICE, READINESS


async def health(request: web.Request) -> web.Response:
    """Liveness: no warehouse call, no auth."""
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 when the warehouse answers, 503 otherwise."""
    await request.app[READINESS].check(request.app[QUERY_SERVICE])
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    response = web.Response(body=request.app[METRICS].render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def setup_health_routes(app: web.Application) -> None:
    """Register the operational routes."""
    app.router.add_get("/health", health, name="health")
    app.router.add_get("/ready", ready, name="ready")
    app.router.add_get("/metrics", metrics, name="metrics")
