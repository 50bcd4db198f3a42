"""HTTP semantics of the result cache: request `Cache-Control`, `ETag`/`If-None-Match`, `Age`,
response `Cache-Control` (always `private`), `Server-Timing` `cache;desc=...`.

The cache, coalescing and cold starts themselves live in the engine (`ResultCache`); this
module only turns a request into the engine's inputs and its `Answer` into a response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson
from aiohttp import hdrs, web

from dbx_backend.api.guards import caller_identity
from dbx_backend.api.middlewares import REQUEST_ID_HEADER
from dbx_backend.api.models import RunOptions
from dbx_backend.api.options import query_options
from dbx_backend.api.prepared import Prepared
from dbx_backend.api.streaming import ARROW, CsvWriter, NdjsonWriter, ResultFormat
from dbx_backend.config import Settings
from dbx_backend.engine import (
    Admitted,
    Answer,
    CacheEntry,
    CacheKeyParts,
    CachePolicy,
    CacheRequest,
    Column,
    JsonAnswer,
    MemoryBusy,
    OpenStatement,
    ParamScalar,
    Produced,
    QueryOptions,
    Reservation,
    TypedParam,
    cache_key,
    parse_cache_control,
    sql_facts,
    to_statement_parameters,
    warehouse_note,
)
from dbx_backend.keys import (
    CACHE_STATUS,
    LIMITER,
    MEMORY_WAIT_MS,
    QUERY_SERVICE,
    REQUEST_ID,
    RESULT_CACHE,
    ROW_COUNT,
    SETTINGS,
    STATEMENT_ID,
)

# A body (or a stream's piece) larger than this is sent in slices of this size: each waits for
# the socket, and the copy aiohttp makes of each write stays small enough to come from the
# heap (dbx_backend/allocator.py) instead of a fresh mapping.
SEND_SLICE_BYTES = 256 * 1024
CACHE_HEADERS = ("ETag", "Age", "Server-Timing", "Cache-Control")


def policy_for(app: web.Application, named: CachePolicy | None) -> CachePolicy:
    """A named query's own policy, else the service's."""
    if named is not None:
        return named
    settings = app[SETTINGS]
    return CachePolicy(settings.cache_ttl_s, settings.cache_stale_s)


def cache_caller(settings: Settings, request: web.Request) -> str:
    """Whose cache this request reads: the caller's digest with CACHE_SCOPE=per_key, else ""."""
    if settings.cache_scope != "per_key":
        return ""
    return caller_identity(settings, request.headers.get("Authorization", ""))


def prepare(
    app: web.Application,
    statement: Admitted,
    params: Mapping[str, ParamScalar | TypedParam],
    body: RunOptions,
    *,
    catalog: str | None = None,
    schema: str | None = None,
    policy: CachePolicy | None = None,
    caller: str = "",
) -> Prepared:
    """A validated, admitted request with its cache key (see `engine.cache_key`)."""
    settings = app[SETTINGS]
    catalog = catalog or settings.databricks_catalog
    schema = schema or settings.databricks_schema
    wire = to_statement_parameters(params)
    key = cache_key(
        CacheKeyParts(
            statement.sql,
            params=tuple((p.name, p.value, p.type) for p in wire),
            catalog=catalog,
            schema=schema,
            row_limit=body.row_limit,
            long_as_string=body.long_as_string,
            warehouse_id=settings.warehouse_id,
            caller=caller if settings.cache_scope == "per_key" else None,
        )
    )
    return Prepared(
        statement,
        params,
        body,
        catalog,
        schema,
        policy_for(app, policy),
        sql_facts(statement.sql).cacheable,
        key,
        min(body.timeout_s or settings.query_timeout_s, settings.max_query_timeout_s),
        caller,
    )


def run_options(request: web.Request, prepared: Prepared, *, streaming: bool) -> QueryOptions:
    """The query service's options to run `prepared` as this request asks."""
    return query_options(
        request,
        prepared.options,
        streaming=streaming,
        catalog=prepared.catalog,
        schema=prepared.schema,
    )


def produced(answer: JsonAnswer, max_entry_bytes: int) -> Produced:
    """What the result cache keeps of an encoded answer: complete ones within the entry cap."""
    return Produced(
        answer.body,
        answer.etag,
        answer.row_count,
        answer.statement_id,
        storable=not answer.truncated and len(answer.body) <= max_entry_bytes,
        details=answer,
        truncated=answer.truncated,
    )


def cache_request(request: web.Request) -> CacheRequest:
    """What the request's `Cache-Control` asks of the cache."""
    return parse_cache_control(request.headers.get("Cache-Control"))


def fresh_answer(
    request: web.Request, prepared: Prepared, app: web.Application, control: CacheRequest
) -> Answer | None:
    """A hit this process holds in memory, had without a coroutine; None when the engine must
    decide (`answer_cached`)."""
    answer = app[RESULT_CACHE].fresh(
        prepared.key, cacheable=prepared.cacheable, policy=prepared.policy, request=control
    )
    if answer is not None:
        _note_answer(request, answer)
    return answer


async def answer_cached(
    request: web.Request,
    prepared: Prepared,
    app: web.Application,
    control: CacheRequest | None = None,
) -> Answer:
    """Ask the engine's result cache for this request's answer (running it if it must)."""
    opened: list[OpenStatement] = []

    async def run() -> Produced:
        settings = app[SETTINGS]
        # A shared run lives as long as its most patient waiter may; each waiter keeps its own.
        options = dataclasses.replace(
            run_options(request, prepared, streaming=False),
            timeout_s=settings.max_query_timeout_s,
        )
        async with app[LIMITER].slot():
            service = app[QUERY_SERVICE]
            opened.append(service.open(prepared.statement, prepared.params, options))
            answer = await service.answer_json(opened[0])
        return produced(answer, settings.cache_max_entry_bytes)

    answer = await app[RESULT_CACHE].answer(
        prepared.key,
        cacheable=prepared.cacheable,
        policy=prepared.policy,
        request=cache_request(request) if control is None else control,
        timeout_s=prepared.timeout_s,
        run=run,
        statement_id=lambda: opened[0].statement_id or None if opened else None,
    )
    if not isinstance(answer, Answer):  # only streams get their rows live
        raise TypeError("a buffered answer came back live")
    _note_answer(request, answer)
    return answer


def _note_answer(request: web.Request, answer: Answer) -> None:
    """What the access log and the metrics say of this answer."""
    request[CACHE_STATUS] = answer.status
    request[ROW_COUNT] = answer.entry.row_count
    request[STATEMENT_ID] = answer.entry.statement_id


def cache_headers(answer: Answer, etag: str, timing: str | None) -> dict[str, str]:
    """`Cache-Control` (private, never public), `Age`, `ETag` and `Server-Timing`."""
    control = f"private, max-age={answer.fresh_for_s}" if answer.stored else "private, no-store"
    server_timing = f"cache;desc={answer.status}"
    if answer.warehouse is not None:
        server_timing += f', warehouse;desc="{warehouse_note(answer.warehouse)}"'
    if timing:
        server_timing = f"{timing}, {server_timing}"
    return {
        "Cache-Control": control,
        "Age": str(int(answer.age_s)),
        "ETag": etag,
        "Server-Timing": server_timing,
    }


def not_modified(request: web.Request, etag: str) -> bool:
    """True when the caller's `If-None-Match` names this ETag (or `*`)."""
    given = request.headers.get("If-None-Match")
    if not given:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in given.split(",")]
    return "*" in tags or etag in tags


def cached_response(request: web.Request, answer: Answer, timing: str | None) -> web.Response:
    """The JSON response for an answer: the stored body as is; `304 Not Modified` when the
    caller already holds it."""
    entry = answer.entry
    headers = cache_headers(answer, entry.etag, timing)
    if "If-None-Match" in request.headers and not_modified(request, entry.etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = "application/json"
    return web.Response(body=entry.body, headers=headers)


async def cached_stream_response(
    request: web.Request, key: str, answer: Answer, result_format: ResultFormat
) -> web.Response:
    """An entry's answer as NDJSON, CSV or Arrow: its body in that format is made once per
    entry and kept beside it (no hit encodes it again); `304` when the caller holds it."""
    entry = answer.entry
    etag = entry.etag[:-1] + f'-{result_format}"'
    headers = cache_headers(answer, etag, None)
    if "If-None-Match" in request.headers and not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    made = functools.partial(stream_body, result_format=result_format)
    body = await request.app[RESULT_CACHE].body_in(key, answer, result_format, made)
    if result_format == "ndjson":  # its last line says where this answer's time went
        rows = entry.row_count
        body += NdjsonWriter().footer(rows, entry.truncated, headers["Server-Timing"])
    headers["Content-Type"] = STREAM_TYPES[result_format]
    if result_format == "csv":
        headers["Content-Disposition"] = f'attachment; filename="result-{entry.statement_id}.csv"'
    return web.Response(body=body, headers=headers)


async def write_sliced(response: web.StreamResponse, data: bytes | memoryview) -> None:
    """Write `data` to a prepared response, in slices of at most `SEND_SLICE_BYTES`."""
    if len(data) <= SEND_SLICE_BYTES:
        await response.write(data)
        return
    view = memoryview(data)
    for start in range(0, len(view), SEND_SLICE_BYTES):
        await response.write(view[start : start + SEND_SLICE_BYTES])


async def send(request: web.Request, response: web.Response) -> web.StreamResponse:
    """Send `response` now. A large body goes out in slices, each waiting for the socket, so
    the transport never copies the whole body into its buffer (asyncio keeps what the socket
    did not take at once); the caller may then release the memory the body held. An answer
    that has no body on the wire (HEAD, 204, 304) goes as aiohttp sends it: headers only."""
    response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]  # sent before the handler returns
    body = response.body
    bodiless = request.method == hdrs.METH_HEAD or response.status in (204, 304)
    if not isinstance(body, bytes) or len(body) <= SEND_SLICE_BYTES or bodiless:
        await response.prepare(request)
        await response.write_eof()
        return response
    sliced = web.StreamResponse(status=response.status, headers=response.headers)
    sliced.content_length = len(body)
    try:
        await sliced.prepare(request)
        await write_sliced(sliced, body)
        await sliced.write_eof()
    except ConnectionError:
        # The client left mid-body: end the request as aiohttp ends one whose client
        # disconnects (the access log says 499).
        raise asyncio.CancelledError from None
    return sliced


async def send_reserved(
    request: web.Request, response: web.Response, reservation: Reservation | None
) -> web.StreamResponse:
    """Send `response`, whose body was read under `reservation` in the memory budget (a
    buffered answer, a page): the reservation is fitted to the body first (grown when the
    estimate was low, MemoryBusy when it cannot), and released once the body is sent."""
    if reservation is None:
        return await send(request, response)
    try:
        size = len(response.body) if isinstance(response.body, bytes) else 0
        if size > reservation.nbytes:
            with memory_noted(request):
                await reservation.grow_to(size)
        else:
            reservation.shrink_to(size)
        return await send(request, response)
    finally:
        reservation.release()


def note_memory_wait(request: web.Request, waited_s: float) -> None:
    """The access log says how long a request waited for room in the memory budget."""
    if waited_s > 0:
        request[MEMORY_WAIT_MS] = round(waited_s * 1000, 1)


@contextmanager
def memory_noted(request: web.Request) -> Iterator[None]:
    """A request refused by the memory budget (503 SERVICE_BUSY): the access log says how long
    it waited."""
    try:
        yield
    except MemoryBusy as exc:
        note_memory_wait(request, exc.waited_s)
        raise


# The Content-Type of each format an entry answers in besides JSON.
STREAM_TYPES = {
    "ndjson": f"{NdjsonWriter.content_type}; charset=utf-8",
    "csv": f"{CsvWriter.content_type}; charset=utf-8",
    "arrow": ARROW,
}


def stream_body(entry: CacheEntry, *, result_format: ResultFormat) -> bytes:
    """NDJSON (without its last line, which differs per answer), CSV or Arrow of a cached
    JSON answer."""
    answer = orjson.loads(entry.body)
    rows, truncated = answer["rows"], bool(answer["truncated"])
    if result_format == "arrow":
        from dbx_backend.api.arrow_stream import arrow_body  # pyarrow on first use

        columns = [_column(c) for c in answer["columns"]]
        return arrow_body(columns, rows, statement_id=entry.statement_id, truncated=truncated)
    if result_format == "ndjson":
        # The columns exactly as the JSON answer has them.
        header = orjson.dumps(
            {
                "columns": answer["columns"],
                "statement_id": entry.statement_id,
                "total_row_count": len(rows),
            }
        )
        return header + b"\n" + NdjsonWriter().rows(rows)
    csv = CsvWriter()
    columns = [_column(c) for c in answer["columns"]]
    return csv.header(columns, entry.statement_id) + csv.rows(rows)


def _column(data: dict[str, Any]) -> Column:
    return Column(
        name=str(data["name"]),
        type=str(data["type"]),
        type_text=str(data["type_text"]),
        position=int(data["position"]),
        nullable=data.get("nullable"),
        precision=data.get("precision"),
        scale=data.get("scale"),
    )
