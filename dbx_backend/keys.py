"""Typed keys for what the application holds: settings and long-lived resources."""

from __future__ import annotations

from aiohttp import web

from dbx_backend.api.guards import QueryLimiter
from dbx_backend.config import Settings
from dbx_backend.engine.query_service import QueryService
from dbx_backend.metrics import Metrics
from dbx_backend.queries import NamedQuery
from dbx_backend.readiness import Readiness
from dbx_backend.warehouse.client import WarehouseClient

SETTINGS = web.AppKey("settings", Settings)
# Strings that must never reach a response (token, client secret, workspace host).
SECRETS: web.AppKey[tuple[str, ...]] = web.AppKey("secrets")
WAREHOUSE = web.AppKey("warehouse", WarehouseClient)
QUERY_SERVICE = web.AppKey("query_service", QueryService)
LIMITER = web.AppKey("limiter", QueryLimiter)
QUERIES = web.AppKey("queries", dict[str, NamedQuery])
METRICS = web.AppKey("metrics", Metrics)
READINESS = web.AppKey("readiness", Readiness)

# What a request carries for the access log and the error envelope.
REQUEST_ID = web.RequestKey("request_id", str)
STATEMENT_ID = web.RequestKey("statement_id", str)
ROW_COUNT = web.RequestKey("row_count", int)
RETRIES = web.RequestKey("retries", int)
WAREHOUSE_MS = web.RequestKey("warehouse_ms", float)
ERROR_CODE = web.RequestKey("error_code", str)
