"""Streamed answers (NDJSON, CSV, Arrow) through the result cache.

A stream asks the engine's result cache like a buffered answer does: a fresh entry (or a
stale one while the warehouse starts) answers at once, in the stream's format, from the
entry's encoded body; otherwise the statement runs in a flight shared with identical
requests. The request that runs it gets a `LiveResult` and writes the rows as they come
(`stream_live`), while the flight keeps a JSON copy for the others and for the cache as long
as the result fits an entry (engine/live.py). An Arrow stream's chunks are decoded twice
while the copy is kept (as Arrow batches for the client, as JSON rows for the copy).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

import orjson
from aiohttp import web

from dbx_backend.api.cached import run_options, write_sliced
from dbx_backend.api.errors import INTERNAL, ShuttingDown, error_body, response_for
from dbx_backend.api.prepared import Prepared
from dbx_backend.api.shutdown import SHUTTING_DOWN_MESSAGE, take_interrupt
from dbx_backend.api.streaming import ResultFormat, StreamWriter, stream_writer
from dbx_backend.engine import (
    Answer,
    ChunkForm,
    EncodedRows,
    Lines,
    LiveResult,
    OpenStatement,
    PairedForm,
    Produced,
    TeeLimits,
    Timings,
    parse_cache_control,
    read_live,
)
from dbx_backend.keys import (
    CACHE_STATUS,
    ERROR_CODE,
    LIMITER,
    QUERY_SERVICE,
    REQUEST_ID,
    RESULT_CACHE,
    ROW_COUNT,
    SECRETS,
    SETTINGS,
    STATEMENT_ID,
)

log = logging.getLogger("dbx_backend.api")


class WriterShape:
    """A stream writer as the flight reading the result uses it."""

    def __init__(self, writer: StreamWriter[Any], result_format: ResultFormat) -> None:
        self.writer = writer
        self.result_format = result_format

    @property
    def form(self) -> ChunkForm[Any]:
        """The chunk form the writer reads."""
        return self.writer.form

    def header(self, opened: OpenStatement) -> bytes:
        """What the writer sends before the rows."""
        return self.writer.header(
            opened.columns,
            opened.statement_id,
            total_row_count=opened.announced_rows,
            chunk_count=opened.announced_chunks,
        )

    def encode(self, part: Any) -> list[bytes | memoryview]:
        """One chunk, as the client gets it."""
        return list(self.writer.part(part))

    def json_rows(self, part: Any) -> EncodedRows | None:
        """The chunk's rows as the buffered JSON answer writes them, for the shared copy."""
        if isinstance(part, Lines):
            # NDJSON lines are, byte for byte, the JSON answer's rows (each `orjson.dumps` of
            # the row, tests/test_json_lines.py), and JSON text never holds a raw newline.
            data = bytes(part.data)
            return EncodedRows(data[:-1].replace(b"\n", b","), part.rows) if part.rows else None
        return EncodedRows(orjson_rows(part), len(part))  # CSV: normalized JSON rows


class PairedShape(WriterShape):
    """A writer whose parts are not JSON (Arrow batches): each chunk is also decoded as the
    JSON answer's rows while the flight keeps a copy (`PairedForm`)."""

    def __init__(
        self, writer: StreamWriter[Any], result_format: ResultFormat, paired: PairedForm[Any]
    ) -> None:
        super().__init__(writer, result_format)
        self.paired = paired

    @property
    def form(self) -> ChunkForm[Any]:
        """Both forms at once."""
        return self.paired

    def encode(self, part: Any) -> list[bytes | memoryview]:
        """The writer's part of the pair."""
        return list(self.writer.part(part[0]))

    def json_rows(self, part: Any) -> EncodedRows | None:
        """The copy's part of the pair (None once the copy was dropped)."""
        copied: EncodedRows | None = part[1]
        return copied


def orjson_rows(rows: list[Any]) -> bytes:
    """Normalized rows as the JSON answer writes them, without the brackets."""
    return orjson.dumps(rows)[1:-1]


def _timings(timings: Timings, *, wait_only: bool = False) -> str:
    wait = f"wait;dur={timings.wait_s * 1000:.1f}"
    if wait_only:
        return wait
    return (
        f"{wait}, fetch;dur={timings.fetch_s * 1000:.1f}, "
        f"convert;dur={timings.convert_s * 1000:.1f}"
    )


async def answer_stream(
    request: web.Request, prepared: Prepared, app: web.Application, result_format: ResultFormat
) -> Answer | LiveResult[Any]:
    """The result cache's answer for a stream: an entry, or the live rows of the statement
    this request runs."""
    settings = app[SETTINGS]
    service = app[QUERY_SERVICE]

    def shape_for(opened: OpenStatement) -> WriterShape:
        writer = stream_writer(result_format, opened)
        if result_format == "arrow":
            return PairedShape(writer, result_format, PairedForm(writer.form, live, opened))
        return WriterShape(writer, result_format)

    live: LiveResult[Any] = LiveResult(shape_for)
    opened_here: list[OpenStatement] = []
    limits = TeeLimits(
        max_rows=settings.max_result_rows,
        max_bytes=min(settings.cache_max_entry_bytes, settings.max_result_bytes),
    )

    async def run() -> Produced | None:
        # A shared run lives as long as its most patient waiter may; each waiter keeps its own.
        options = dataclasses.replace(
            run_options(request, prepared, streaming=True), timeout_s=settings.max_query_timeout_s
        )
        owned = contextlib.AsyncExitStack()
        try:
            await owned.enter_async_context(app[LIMITER].slot())
            opened = service.open(prepared.statement, prepared.params, options)
            opened_here.append(opened)
            await owned.enter_async_context(opened)
        except BaseException:
            await owned.aclose()
            raise
        copied = await read_live(opened, live, owned, limits=limits, budget=service.memory)
        if copied is None:
            return None
        body, etag, rows = copied
        complete = not opened.truncated
        return Produced(body, etag, rows, opened.statement_id, complete, truncated=not complete)

    outcome = await app[RESULT_CACHE].answer(
        prepared.key,
        cacheable=prepared.cacheable,
        policy=prepared.policy,
        request=parse_cache_control(request.headers.get("Cache-Control")),
        timeout_s=prepared.timeout_s,
        run=run,
        statement_id=lambda: opened_here[0].statement_id or None if opened_here else None,
        live=live,
    )
    request[CACHE_STATUS] = outcome.status
    if isinstance(outcome, Answer):
        request[ROW_COUNT] = outcome.entry.row_count
        request[STATEMENT_ID] = outcome.entry.statement_id
    return outcome


async def stream_live(
    request: web.Request, live: LiveResult[Any], result_format: ResultFormat
) -> web.StreamResponse:
    """Write the rows of the statement this request runs, as the flight hands them over;
    `write` waits for the socket. A failure after the first byte ends the stream as its
    format says (an NDJSON error line, a cut CSV or Arrow body)."""
    try:
        return await _write_live(request, live, result_format)
    finally:
        await live.close()


async def _write_live(
    request: web.Request, live: LiveResult[Any], result_format: ResultFormat
) -> web.StreamResponse:
    opened = live.opened
    shape = live.shape
    if opened is None or not isinstance(shape, WriterShape):
        raise RuntimeError("a live result is written once its statement began")
    writer = shape.writer
    request[STATEMENT_ID] = opened.statement_id
    response = web.StreamResponse(
        headers={
            "Content-Type": writer.media_type,
            "X-Request-ID": request[REQUEST_ID],
            # Headers leave before the rows: only the wait is known, and not yet whether the
            # result will be stored (a stream cannot say max-age).
            "Server-Timing": f"{_timings(opened.timings, wait_only=True)}, "
            f"cache;desc={live.status}",
            "Cache-Control": "private, no-store",
        }
    )
    if result_format == "csv":
        response.headers["Content-Disposition"] = (
            f'attachment; filename="result-{opened.statement_id}.csv"'
        )
    try:
        await response.prepare(request)
        if live.header:
            await response.write(live.header)
        async for pieces, _ in live.pieces():
            for piece in pieces:
                await write_sliced(response, piece)
    except asyncio.CancelledError:
        if not take_interrupt(request):
            raise
        # The shutdown grace is over: the stream ends as a failed one does.
        failure: Exception = ShuttingDown(SHUTTING_DOWN_MESSAGE)
    except Exception as exc:
        failure = exc
    else:
        await response.write(writer.footer(live.rows, opened.truncated, _timings(opened.timings)))
        request[ROW_COUNT] = live.rows
        await response.write_eof()
        return response
    return await _end_failed(request, response, writer, failure, live.rows, opened.statement_id)


async def _end_failed(
    request: web.Request,
    response: web.StreamResponse,
    writer: StreamWriter[Any],
    failure: Exception,
    rows: int,
    statement_id: str,
) -> web.StreamResponse:
    if not response.prepared:
        raise failure  # nothing sent yet: the error middleware answers
    row = response_for(failure) or INTERNAL
    request[ERROR_CODE] = row.code
    log.error(
        "request %s: stream failed after %d rows: %s",
        request[REQUEST_ID],
        rows,
        row.code,
        exc_info=failure if row is INTERNAL else None,
    )
    request[ROW_COUNT] = rows
    secrets: tuple[str, ...] = request.app[SECRETS]
    body = error_body(
        failure,
        row,
        request[REQUEST_ID],
        secrets,
        read_only=request.app[SETTINGS].read_only,
        statement_id=statement_id,
    )
    ending = writer.failure(body)
    if not writer.cut_on_failure:
        await response.write(ending)
        await response.write_eof()
        return response
    with contextlib.suppress(ConnectionError):
        if ending:
            await response.write(ending)
    if request.transport is not None:
        # Cut the body short (the chunked response never ends), so no client mistakes a
        # partial CSV file or Arrow stream for a whole one.
        request.transport.close()
    return response
