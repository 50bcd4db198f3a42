"""Typed keys for what the application holds (settings, long-lived parts) and what a request
carries; every key of the service is declared here, and nothing else is."""

from __future__ import annotations

from aiohttp import web

from dbx_backend.config import Settings
from dbx_backend.engine.handles import HandleSigner
from dbx_backend.engine.idempotency import IdempotencyStore
from dbx_backend.engine.limiter import QueryLimiter
from dbx_backend.engine.memory import MemoryBudget
from dbx_backend.engine.open_statements import OpenStatements
from dbx_backend.engine.query_service import QueryService
from dbx_backend.engine.result_cache import ResultCache
from dbx_backend.engine.shared_state import SharedState
from dbx_backend.engine.tasks import TaskOwner
from dbx_backend.engine.warehouse_state import WarehouseTracker
from dbx_backend.inflight import InFlight
from dbx_backend.metrics import Metrics
from dbx_backend.queries import NamedQuery
from dbx_backend.readiness import Readiness

SETTINGS = web.AppKey("settings", Settings)
# Strings that must never reach a response (token, client secret, workspace host).
SECRETS: web.AppKey[tuple[str, ...]] = web.AppKey("secrets")
# The engine: the only way to the warehouse (the transport itself is held by no key).
QUERY_SERVICE = web.AppKey("query_service", QueryService)
LIMITER = web.AppKey("limiter", QueryLimiter)
# MEMORY_BUDGET_MB: shared by buffered answers, streams' windows and the result cache.
MEMORY_BUDGET = web.AppKey("memory_budget", MemoryBudget)
QUERIES = web.AppKey("queries", dict[str, NamedQuery])
METRICS = web.AppKey("metrics", Metrics)
READINESS = web.AppKey("readiness", Readiness)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
# The one owner of background work (cancels, detached submits, checks), drained at shutdown.
TASKS = web.AppKey("tasks", TaskOwner)
HANDLE_SIGNER = web.AppKey("statement_handle_signer", HandleSigner)
IDEMPOTENCY = web.AppKey("statement_idempotency", IdempotencyStore)
OPEN_STATEMENTS = web.AppKey("open_statements", OpenStatements)
# The result cache with coalescing and cold starts, the state it keeps (in process or Redis),
# and what the service knows of the warehouse's own state.
RESULT_CACHE = web.AppKey("result_cache", ResultCache)
SHARED_STATE: web.AppKey[SharedState] = web.AppKey("shared_state")
WAREHOUSE_TRACKER = web.AppKey("warehouse_tracker", WarehouseTracker)

# What a request carries for the access log and the error envelope.
REQUEST_ID = web.RequestKey("request_id", str)
STATEMENT_ID = web.RequestKey("statement_id", str)
ROW_COUNT = web.RequestKey("row_count", int)
RETRIES = web.RequestKey("retries", int)
WAREHOUSE_MS = web.RequestKey("warehouse_ms", float)
ERROR_CODE = web.RequestKey("error_code", str)
CACHE_STATUS = web.RequestKey("cache_status", str)  # hit, miss, stale, coalesced, bypass
MEMORY_WAIT_MS = web.RequestKey("memory_wait_ms", float)  # waited for the memory budget
