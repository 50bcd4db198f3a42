"""HTTP handlers: parse the request with the contract models, call the query service, answer."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel

from dbx_backend.api.answers import model_response
from dbx_backend.api.bodies import read_body
from dbx_backend.api.cached import (
    SEND_SLICE_BYTES,
    answer_cached,
    cache_caller,
    cache_request,
    cached_response,
    cached_stream_response,
    fresh_answer,
    memory_noted,
    note_memory_wait,
    prepare,
    send,
    send_reserved,
)
from dbx_backend.api.errors import (
    InvalidRequest,
    NotFoundError,
)
from dbx_backend.api.models import (
    NamedQueryCache,
    NamedQueryInfo,
    NamedQueryList,
    NamedQueryParam,
    NamedQueryRequest,
    QueryRequest,
    TypedParamModel,
)
from dbx_backend.api.options import SERVICE_NAME
from dbx_backend.api.prepared import PREPARED, Prepared, PreparedRequests
from dbx_backend.api.streamed import answer_stream, stream_live
from dbx_backend.api.streaming import PLAIN_JSON, ResultFormat, negotiate
from dbx_backend.config import Settings
from dbx_backend.engine import (
    CachePolicy,
    JsonAnswer,
    LiveResult,
    OpenStatement,
    ParamScalar,
    QueryResult,
    Timings,
    TypedParam,
    released_on_error,
)
from dbx_backend.keys import (
    QUERIES,
    QUERY_SERVICE,
    REQUEST_ID,
    RETRIES,
    SETTINGS,
    STATEMENT_ID,
    WAREHOUSE_MS,
)
from dbx_backend.queries import bind_params

log = logging.getLogger("dbx_backend.api")
__all__ = ["SERVICE_NAME", "query_params", "read_json", "setup_routes"]
_Model = TypeVar("_Model", bound=BaseModel)
# What JSON calls whitespace (RFC 8259); bytes.strip() would also take \f and \v, which are not.
JSON_WHITESPACE = b" \t\n\r"
Params = Mapping[str, ParamScalar | TypedParam]


async def read_json_bytes(
    request: web.Request, *, empty_ok: bool = False, settings: Settings | None = None
) -> bytes:
    """A JSON body's bytes, decoded, within the body's time and size limits (408, 413); b""
    when there is no body and `empty_ok`."""
    settings = settings or request.app[SETTINGS]
    body = await read_body(request, timeout_s=settings.body_read_timeout_s)
    if not body and empty_ok:  # no body at all; a body of whitespace holds no JSON value
        return b""
    blank = not body.strip(JSON_WHITESPACE)
    # The header as clients send it is checked as is; anything else is parsed (parameters, case).
    given = request.headers.get("Content-Type")
    if given != "application/json" and request.content_type != "application/json":
        raise InvalidRequest("Content-Type must be application/json", field="body")
    if blank:
        raise InvalidRequest("the request body is empty; send a JSON object", field="body")
    return body


def parse_json(body: bytes, model: type[_Model]) -> _Model:
    """`body` (from `read_json_bytes`) validated against `model`."""
    return model.model_validate_json(body) if body else model.model_validate({})


async def read_json(request: web.Request, model: type[_Model], *, empty_ok: bool = False) -> _Model:
    """Validate a JSON body against `model`; the body's time and size limits apply (408, 413)."""
    return parse_json(await read_json_bytes(request, empty_ok=empty_ok), model)


def query_params(body: QueryRequest) -> dict[str, ParamScalar | TypedParam]:
    """Request params as the query service takes them."""
    return {
        name: TypedParam(value.value, value.type) if isinstance(value, TypedParamModel) else value
        for name, value in body.params.items()
    }


def server_timing(timings: Timings, *, wait_only: bool = False) -> str:
    """`Server-Timing` value: where the time went, in milliseconds (a stream's headers leave
    before its rows, so they carry the wait alone and its footer line the whole)."""
    wait = f"wait;dur={timings.wait_s * 1000:.1f}"
    if wait_only:
        return wait
    return (
        f"{wait}, fetch;dur={timings.fetch_s * 1000:.1f}, "
        f"convert;dur={timings.convert_s * 1000:.1f}"
    )


def note_statement(
    request: web.Request, statement: OpenStatement | QueryResult | JsonAnswer
) -> None:
    """Record what the access log reports about this request; warn about slow statements."""
    request[STATEMENT_ID] = statement.statement_id
    request[RETRIES] = statement.stats.retries
    request[WAREHOUSE_MS] = round(statement.stats.warehouse_s * 1000, 1)
    if not isinstance(statement, QueryResult):
        note_memory_wait(request, statement.memory_wait_s)
    waited = statement.timings.wait_s
    if waited >= request.app[SETTINGS].slow_query_s:
        log.warning(
            "slow statement %s: %.1f s until its result was ready",
            statement.statement_id,
            waited,
            extra={"request_id": request[REQUEST_ID], "statement_id": statement.statement_id},
        )


async def query(request: web.Request) -> web.StreamResponse:
    """Run one ad-hoc statement: a JSON result, or an NDJSON/CSV stream per `Accept`."""
    app = request.app
    settings = app[SETTINGS]
    raw = await read_json_bytes(request, settings=settings)
    caller = cache_caller(settings, request)
    prepared = app[PREPARED].get("query", caller, raw)
    if prepared is None:  # not seen before: validate, admit, derive its key; then remember
        body = parse_json(raw, QueryRequest)
        statement = await app[QUERY_SERVICE].admit(body.sql)
        prepared = prepare(
            app,
            statement,
            query_params(body),
            body,
            catalog=body.catalog,
            schema=body.schema_,
            caller=caller,
        )
        app[PREPARED].put("query", caller, raw, prepared)
    return await run_statement(request, prepared, app)


async def list_queries(request: web.Request) -> web.Response:
    """The named queries and their declared parameters."""
    queries = request.app[QUERIES]
    return model_response(
        NamedQueryList(
            queries=[
                NamedQueryInfo(
                    name=q.name,
                    description=q.description,
                    params=[NamedQueryParam(**dataclasses.asdict(p)) for p in q.params],
                    cache=None
                    if q.cache is None
                    else NamedQueryCache(**dataclasses.asdict(q.cache)),
                )
                for q in queries.values()
            ]
        )
    )


async def run_named_query(request: web.Request) -> web.StreamResponse:
    """Run a named query with validated parameters, through the same path as `/api/query`."""
    app = request.app
    name = request.match_info["name"]
    named = app[QUERIES].get(name)
    if named is None:
        raise NotFoundError(f"no named query {name!r}; GET /api/queries lists them")
    settings = app[SETTINGS]
    raw = await read_json_bytes(request, empty_ok=True, settings=settings)
    caller = cache_caller(settings, request)
    route = "named:" + name
    prepared = app[PREPARED].get(route, caller, raw)
    if prepared is None:  # not seen before: validate, bind, admit, derive its key; remember
        body = parse_json(raw, NamedQueryRequest)
        bound = bind_params(named, body.params)
        statement = await app[QUERY_SERVICE].admit_named(named)
        params = {k: TypedParam(value["value"], str(value["type"])) for k, value in bound.items()}
        own = named.cache
        policy = None if own is None else CachePolicy(own.ttl_s, own.stale_s)
        prepared = prepare(app, statement, params, body, policy=policy, caller=caller)
        app[PREPARED].put(route, caller, raw, prepared)
    return await run_statement(request, prepared, app)


async def run_statement(
    request: web.Request, prepared: Prepared, app: web.Application
) -> web.StreamResponse:
    """Answer from the result cache, or run the statement (coalesced with identical runs, within
    the concurrency limit and the memory budget) and answer in the negotiated format."""
    accept = request.headers.get("Accept", "")
    result_format = "json" if accept in PLAIN_JSON else negotiate(accept)
    with memory_noted(request):
        if result_format != "json":
            return await _answer_stream(request, prepared, app, result_format)
        control = cache_request(request)
        # A hit in this process's memory is had at once; anything else asks the engine.
        answer = fresh_answer(request, prepared, app, control) or await answer_cached(
            request, prepared, app, control
        )
    ran = answer.produced.details if answer.produced is not None else None
    if not isinstance(ran, JsonAnswer):  # from the cache (or another request's run)
        response = cached_response(request, answer, None)
        if len(answer.entry.body) <= SEND_SLICE_BYTES:
            return response  # small: aiohttp sends it as the handler returns
        return await send(request, response)
    with released_on_error(ran.reservation):
        note_statement(request, ran)
        response = cached_response(request, answer, server_timing(ran.timings))
    return await send_reserved(request, response, ran.reservation)


async def _answer_stream(
    request: web.Request, prepared: Prepared, app: web.Application, result_format: ResultFormat
) -> web.StreamResponse:
    if result_format == "arrow" and prepared.options.long_as_string:
        prepared = for_arrow(app, prepared)  # int64 holds every LONG
    outcome = await answer_stream(request, prepared, app, result_format)
    if isinstance(outcome, LiveResult):
        if outcome.opened is not None:
            note_statement(request, outcome.opened)
        return await stream_live(request, outcome, result_format)
    response = await cached_stream_response(request, prepared.key, outcome, result_format)
    return await send(request, response)


def for_arrow(app: web.Application, prepared: Prepared) -> Prepared:
    """`prepared` as an Arrow stream runs it: LONG values as int64 whatever `long_as_string`
    says, so it reads (and stores) the entry of a request without it."""
    options = prepared.options.model_copy(update={"long_as_string": False})
    return prepare(
        app,
        prepared.statement,
        prepared.params,
        options,
        catalog=prepared.catalog,
        schema=prepared.schema,
        policy=prepared.policy,
        caller=prepared.caller,
    )


def setup_routes(app: web.Application) -> None:
    """Register every route."""
    app[PREPARED] = PreparedRequests()
    app.router.add_post("/api/query", query, name="query")
    app.router.add_get("/api/queries", list_queries, name="list_queries")
    app.router.add_post("/api/queries/{name}", run_named_query, name="run_named_query")
