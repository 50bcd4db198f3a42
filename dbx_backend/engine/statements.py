"""Long statements on the warehouse: submit without waiting, read the state, page, cancel.

Nothing here holds per-statement state between calls: every call starts from a statement id.
Pages are random access: `rows()` maps `[offset, offset + limit)` onto the manifest's chunks and
fetches only those, by index. That relies on the GA behaviour that chunks may be fetched in any
order and more than once (reference §4.2); the preview-era rule "INLINE chunks once, in order,
then the statement closes" would turn a re-read into an error (CLOSED or 404), which callers
then see as such. INLINE and EXTERNAL_LINKS results are both read, whatever the submit chose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from dbx_backend.engine.external import THREAD_DECODE_BYTES, decode_chunk
from dbx_backend.engine.normalize import (
    Column,
    JsonValue,
    NormalizeOptions,
    RowConverter,
    columns_from_manifest,
)
from dbx_backend.engine.parameters import ParamScalar, TypedParam, to_statement_parameters
from dbx_backend.engine.query_service import (
    THREAD_CONVERT_ROWS,
    PollSchedule,
    QueryOptions,
    Sleep,
    choose_wait_timeout,
    execute_request,
    statement_failure,
)
from dbx_backend.warehouse.client import WarehouseClient
from dbx_backend.warehouse.errors import (
    LinkExpired,
    ProtocolError,
    ResponseLost,
    StatementClosed,
    StatementFailed,
    StatementTimedOut,
    WarehouseError,
)
from dbx_backend.warehouse.retry import Deadline, never_ran
from dbx_backend.warehouse.wire import (
    ExternalLink,
    ResultData,
    ResultManifest,
    State,
    StatementResponse,
)

Rows = list[list[JsonValue]]
Params = Mapping[str, ParamScalar | TypedParam]


@dataclass(frozen=True, slots=True)
class StatementInfo:
    """Where a statement is; for SUCCEEDED also its schema, size and a first page of rows,
    for FAILED what failed."""

    statement_id: str
    state: str
    columns: list[Column] | None = None
    total_row_count: int | None = None
    truncated: bool = False
    rows: Rows | None = None
    failure: StatementFailed | None = None


def _outcome_seen(future: asyncio.Future[StatementResponse]) -> None:
    if not future.cancelled():
        future.exception()


def _reported_state(state: str) -> str:
    """The protocol's states as they are; a state it adds later is still running (§6.2)."""
    return state if state in State.KNOWN else State.RUNNING


@dataclass(frozen=True, slots=True)
class RowsPage:
    """Rows `[offset, offset + len(rows))` of a result; `state` says why a page may be empty."""

    state: str
    rows: Rows
    offset: int
    total_row_count: int


@asynccontextmanager
async def _answer_within(deadline: Deadline, statement_id: str) -> AsyncIterator[None]:
    """Bound a read of a statement by `deadline`; running out is the warehouse being slow."""
    try:
        async with asyncio.timeout(deadline.remaining()):
            yield
    except TimeoutError:
        raise ResponseLost(
            "the warehouse did not answer in time", statement_id=statement_id
        ) from None


class StatementOperations:
    """Submit, inspect, page and cancel statements through one `WarehouseClient`."""

    def __init__(
        self,
        client: WarehouseClient,
        *,
        call_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        schedule: PollSchedule | None = None,
        sleep: Sleep = asyncio.sleep,
        abandon: Callable[[asyncio.Task[StatementResponse]], None] | None = None,
    ) -> None:
        self.client = client
        self.call_timeout_s = call_timeout_s
        self.clock = clock
        self.schedule = schedule or PollSchedule()
        self.sleep = sleep
        # Who cancels a statement whose submit we stopped waiting for (QueryService does).
        self.abandon = abandon

    async def submit(
        self, sql: str, params: Params, options: QueryOptions, *, wait_s: float = 0.0
    ) -> StatementInfo:
        """Start `sql`; the warehouse holds the answer for most of `wait_s` (if 5 s or more) or
        answers at once. FAILED raises; `wait_until_end` waits on from where this leaves off.

        The statement keeps running after we return: only `cancel` stops it (reference §4.3).
        `options.timeout_s` bounds the submit itself.
        """
        deadline = Deadline(options.timeout_s, self.clock)
        waiting = Deadline(min(wait_s, options.timeout_s), self.clock)
        body = execute_request(sql, to_statement_parameters(params), options)
        submit = asyncio.ensure_future(
            self.client.submit(
                body,
                deadline=deadline,
                # The warehouse waits 5..50 s or not at all (reference §3.3); a second is kept
                # so that the answer leaves within `wait_s`.
                wait_timeout=lambda: choose_wait_timeout(waiting.remaining(), 50),
            )
        )
        # Shielded, it outlives a caller that is cancelled (at shutdown, after the drain gave
        # up): its failure is then nobody's to report, and must not be logged as unretrieved.
        submit.add_done_callback(_outcome_seen)
        try:
            async with asyncio.timeout(deadline.remaining()):
                response = await asyncio.shield(submit)
        except TimeoutError:
            # It may run already: cancel it as soon as the warehouse tells us its id.
            if self.abandon is not None:
                self.abandon(submit)
            raise StatementTimedOut(
                f"the warehouse did not take the statement within {options.timeout_s:g} s; "
                "it is cancelled if it started",
                may_have_run=True,
            ) from None
        except WarehouseError as exc:
            exc.may_have_run = not never_ran(exc)
            raise
        if response.status.state == State.FAILED:
            raise statement_failure(response)
        return StatementInfo(response.statement_id, _reported_state(response.status.state))

    async def wait_until_end(self, info: StatementInfo, waiting: Deadline) -> StatementInfo:
        """Poll until the statement ends or `waiting` runs out (it then keeps running);
        FAILED raises, as at submit."""
        delays = self.schedule.delays()
        state = info.state
        while state not in State.TERMINAL and waiting.remaining() > 0:
            await self.sleep(min(next(delays), waiting.remaining()))
            if waiting.expired:
                break
            call = Deadline(self.call_timeout_s, self.clock)
            async with _answer_within(call, info.statement_id):
                response = await self.client.get_statement(info.statement_id, deadline=call)
            if response.status.state == State.FAILED:
                raise statement_failure(response)
            state = _reported_state(response.status.state)
        return StatementInfo(info.statement_id, state)

    async def status(
        self, statement_id: str, *, first_page_rows: int, normalize: NormalizeOptions
    ) -> StatementInfo:
        """The statement's state; when SUCCEEDED, schema, totals and up to `first_page_rows`
        rows from chunk 0; when FAILED, the failure (never raised: it is the state's answer)."""
        deadline = Deadline(self.call_timeout_s, self.clock)
        async with _answer_within(deadline, statement_id):
            response = await self.client.get_statement(statement_id, deadline=deadline)
            state = response.status.state
            if state == State.FAILED:
                return StatementInfo(statement_id, state, failure=statement_failure(response))
            if state != State.SUCCEEDED:
                return StatementInfo(response.statement_id, _reported_state(state))
            manifest, first = _result_of(response)
            columns = columns_from_manifest(manifest, normalize)
            rows: Rows = []
            if first_page_rows > 0 and manifest.total_row_count > 0:
                converter = RowConverter(columns, normalize)
                rows = await self._chunk_rows(
                    statement_id, manifest, first, converter, 0, first_page_rows, deadline
                )
        return StatementInfo(
            response.statement_id,
            state,
            columns=columns,
            total_row_count=manifest.total_row_count,
            truncated=manifest.truncated,
            rows=rows,
        )

    async def rows(
        self, statement_id: str, offset: int, limit: int, normalize: NormalizeOptions
    ) -> RowsPage:
        """Rows `[offset, offset + limit)`, fetching only the chunks that hold them, in order.

        A statement that is not SUCCEEDED gives an empty page with its state (CLOSED raises
        StatementClosed: its result is gone). Past the end: an empty page.
        """
        deadline = Deadline(self.call_timeout_s, self.clock)
        async with _answer_within(deadline, statement_id):
            response = await self.client.get_statement(statement_id, deadline=deadline)
            state = response.status.state
            if state == State.CLOSED:
                raise StatementClosed(
                    "the statement's result is no longer available", statement_id=statement_id
                )
            if state != State.SUCCEEDED:
                return RowsPage(_reported_state(state), [], offset, 0)
            manifest, first = _result_of(response)
            total = manifest.total_row_count
            end = min(offset + limit, total)
            if offset >= end:
                return RowsPage(state, [], offset, total)
            converter = RowConverter(columns_from_manifest(manifest, normalize), normalize)
            if manifest.chunks:
                rows = await self._rows_by_index(
                    statement_id, manifest, first, converter, offset, end, deadline
                )
            else:
                rows = await self._rows_by_walking(
                    statement_id, manifest, first, converter, offset, end, deadline
                )
        return RowsPage(state, rows, offset, total)

    async def cancel(self, statement_id: str) -> None:
        """Ask the warehouse to cancel; it may still finish first (reference §4.3)."""
        await self.client.cancel(statement_id)

    # -- reading chunks -------------------------------------------------------------------

    async def _rows_by_index(
        self,
        statement_id: str,
        manifest: ResultManifest,
        first: ResultData,
        converter: RowConverter,
        offset: int,
        end: int,
        deadline: Deadline,
    ) -> Rows:
        rows: Rows = []
        for info in sorted(manifest.chunks, key=lambda c: c.row_offset):
            if info.row_offset + info.row_count <= offset or info.row_offset >= end:
                continue
            chunk = first
            if info.chunk_index != first.chunk_index:
                chunk = await self.client.get_chunk(
                    statement_id, info.chunk_index, deadline=deadline
                )
            if _chunk_offset(chunk) != info.row_offset:
                raise ProtocolError(
                    f"chunk {info.chunk_index} starts at row {_chunk_offset(chunk)}, "
                    f"the manifest says {info.row_offset}",
                    statement_id=statement_id,
                )
            start = max(offset, info.row_offset)
            rows += await self._chunk_rows(
                statement_id, manifest, chunk, converter, start, end, deadline
            )
        return rows

    async def _rows_by_walking(
        self,
        statement_id: str,
        manifest: ResultManifest,
        first: ResultData,
        converter: RowConverter,
        offset: int,
        end: int,
        deadline: Deadline,
    ) -> Rows:
        # No chunk listing (reference §5.3: not guaranteed for INLINE): follow next pointers.
        rows: Rows = []
        chunk: ResultData | None = first
        for _ in range(max(manifest.total_chunk_count, end + 1)):  # bounded: a loop guard
            if chunk is None:
                break
            chunk_end = _chunk_offset(chunk) + _chunk_length(chunk)
            if chunk_end > offset:
                start = max(offset, _chunk_offset(chunk))
                rows += await self._chunk_rows(
                    statement_id, manifest, chunk, converter, start, end, deadline
                )
            if chunk_end >= end:
                break
            index, link = chunk.next_pointer()
            if link:
                chunk = await self.client.follow_chunk_link(statement_id, link, deadline=deadline)
            elif index is not None:
                chunk = await self.client.get_chunk(statement_id, index, deadline=deadline)
            else:
                chunk = None
        return rows

    async def _chunk_rows(
        self,
        statement_id: str,
        manifest: ResultManifest,
        chunk: ResultData,
        converter: RowConverter,
        start: int,
        end: int,
        deadline: Deadline,
    ) -> Rows:
        """Rows `[start, end)` (whole-result positions) of one chunk, normalized."""
        first_row = _chunk_offset(chunk)
        lo, hi = max(0, start - first_row), max(0, end - first_row)
        if chunk.external_links is not None:
            rows: Rows = []
            for link in chunk.external_links:
                data = await self._download(statement_id, link, deadline)
                rows += await _run(decode_chunk, manifest.format, data, converter)
            return rows[lo:hi]
        cells = (chunk.data_array or [])[lo:hi]
        if len(cells) >= THREAD_CONVERT_ROWS:
            return await asyncio.to_thread(converter.convert_rows, cells)
        return converter.convert_rows(cells)

    async def _download(self, statement_id: str, link: ExternalLink, deadline: Deadline) -> bytes:
        try:
            return await self.client.download(link, deadline=deadline)
        except LinkExpired:
            # Each chunk call mints a fresh link for the same chunk (reference §9).
            fresh = await self.client.get_chunk(statement_id, link.chunk_index, deadline=deadline)
            for candidate in fresh.external_links or ():
                if candidate.row_offset == link.row_offset:
                    return await self.client.download(candidate, deadline=deadline)
            raise ProtocolError(
                f"the chunk endpoint gave no link for chunk {link.chunk_index}",
                statement_id=statement_id,
            ) from None


def _result_of(response: StatementResponse) -> tuple[ResultManifest, ResultData]:
    if response.manifest is None:
        raise ProtocolError(
            "a finished statement came without its manifest", statement_id=response.statement_id
        )
    first = response.result or ResultData(data_array=[])
    return response.manifest, first


def _chunk_offset(chunk: ResultData) -> int:
    # EXTERNAL_LINKS chunks carry their position in the link objects (reference §5.5).
    if chunk.external_links:
        return chunk.external_links[0].row_offset
    return chunk.row_offset


def _chunk_length(chunk: ResultData) -> int:
    if chunk.row_count:
        return chunk.row_count
    if chunk.external_links:
        return sum(link.row_count for link in chunk.external_links)
    return len(chunk.data_array or [])


async def _run(
    decode: Callable[[str, bytes, RowConverter], Rows],
    result_format: str,
    data: bytes,
    converter: RowConverter,
) -> Rows:
    if len(data) >= THREAD_DECODE_BYTES:
        return await asyncio.to_thread(decode, result_format, data, converter)
    return decode(result_format, data, converter)
