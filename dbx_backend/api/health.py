"""Operational endpoints: liveness, readiness (the warehouse answers), Prometheus metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from dbx_backend.keys import METRICS, QUERY_SERVICE, READINESS, WAREHOUSE_TRACKER
from dbx_backend.readiness import NotReady


async def health(request: web.Request) -> web.Response:
    """Liveness: no warehouse call, no auth."""
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: the last background check's result and age; 200 when ready, 503 otherwise.

    Answers within a second whatever the warehouse does: the check runs in the background.
    """
    tracker = request.app.get(WAREHOUSE_TRACKER)
    report = await request.app[READINESS].report(request.app[QUERY_SERVICE], tracker)
    if not report.ready:
        raise NotReady(report)
    return web.json_response(report.to_json())


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
