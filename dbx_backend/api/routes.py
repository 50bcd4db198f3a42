"""HTTP handlers: parse the request with the contract models, call the query service, answer."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel

from dbx_backend.api.errors import InvalidRequest, json_response
from dbx_backend.api.guards import check_sql
from dbx_backend.api.models import QueryRequest, TypedParamModel
from dbx_backend.databricks.normalize import NormalizeOptions
from dbx_backend.databricks.query_service import (
    ParamScalar,
    QueryOptions,
    QueryResult,
    TypedParam,
)
from dbx_backend.keys import (
    LIMITER,
    QUERY_SERVICE,
    REQUEST_ID,
    RETRIES,
    ROW_COUNT,
    SETTINGS,
    STATEMENT_ID,
    WAREHOUSE_MS,
)

SERVICE_NAME = "dbx-backend"
_Model = TypeVar("_Model", bound=BaseModel)


async def read_json(request: web.Request, model: type[_Model]) -> _Model:
    """Validate a JSON body against `model`; the body limit applies while reading (413)."""
    if request.content_type != "application/json":
        raise InvalidRequest("Content-Type must be application/json", field="body")
    body = await request.read()
    if not body.strip():
        raise InvalidRequest("the request body is empty; send a JSON object", field="body")
    return model.model_validate_json(body)


def query_options(request: web.Request, body: QueryRequest) -> QueryOptions:
    """The query service's options for this request, with the service's defaults and caps."""
    settings = request.app[SETTINGS]
    timeout_s = min(body.timeout_s or settings.query_timeout_s, settings.max_query_timeout_s)
    return QueryOptions(
        catalog=body.catalog or settings.databricks_catalog,
        schema=body.schema_ or settings.databricks_schema,
        row_limit=body.row_limit,
        timeout_s=timeout_s,
        max_rows=settings.max_result_rows,
        normalize=NormalizeOptions(long_as_string=body.long_as_string),
        query_tags={"request_id": request[REQUEST_ID], "service": SERVICE_NAME},
    )


def query_params(body: QueryRequest) -> dict[str, ParamScalar | TypedParam]:
    """Request params as the query service takes them."""
    return {
        name: TypedParam(value.value, value.type) if isinstance(value, TypedParamModel) else value
        for name, value in body.params.items()
    }


def server_timing(result: QueryResult) -> str:
    """`Server-Timing` header value: where the time went, in milliseconds."""
    t = result.timings
    return (
        f"wait;dur={t.wait_s * 1000:.1f}, fetch;dur={t.fetch_s * 1000:.1f}, "
        f"convert;dur={t.convert_s * 1000:.1f}"
    )


def note_result(request: web.Request, result: QueryResult) -> None:
    """Record what the access log reports about this request."""
    request[STATEMENT_ID] = result.statement_id
    request[ROW_COUNT] = result.row_count
    request[RETRIES] = result.stats.retries
    request[WAREHOUSE_MS] = round(result.stats.warehouse_s * 1000, 1)


async def health(request: web.Request) -> web.Response:
    """Liveness: no warehouse call, no auth."""
    return json_response({"status": "ok"})


async def query(request: web.Request) -> web.StreamResponse:
    """Run one statement and return its whole result as JSON."""
    body = await read_json(request, QueryRequest)
    check_sql(request.app[SETTINGS], body.sql, adhoc=True)
    async with request.app[LIMITER].slot():
        result = await request.app[QUERY_SERVICE].execute_query(
            body.sql, query_params(body), query_options(request, body)
        )
    note_result(request, result)
    payload = {
        "columns": [c.to_json() for c in result.columns],
        "rows": result.rows,
        "row_count": result.row_count,
        "truncated": result.truncated,
        "statement_id": result.statement_id,
    }
    return json_response(payload, headers={"Server-Timing": server_timing(result)})


def setup_routes(app: web.Application) -> None:
    """Register every route."""
    app.router.add_get("/health", health, name="health")
    app.router.add_post("/api/query", query, name="query")
