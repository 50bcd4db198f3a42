"""Run one SQL statement to its end: submit, poll, read every chunk, cancel on give-up.

Polling is not retrying: the warehouse is healthy, the statement is just not done. One
`Deadline` bounds the whole query; whenever we stop early (deadline, caller gone, error while
reading) a statement that may still run is cancelled on the warehouse.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar

from dbx_backend.engine.external import ExternalChunkReader
from dbx_backend.engine.normalize import (
    Column,
    JsonValue,
    NormalizeOptions,
    RowConverter,
    columns_from_manifest,
)
from dbx_backend.engine.parameters import ParamScalar, TypedParam, to_statement_parameters
from dbx_backend.warehouse.client import CallStats, WarehouseClient, call_stats
from dbx_backend.warehouse.errors import (
    ProtocolError,
    StatementCanceled,
    StatementClosed,
    StatementFailed,
    StatementTimedOut,
    WarehouseError,
)
from dbx_backend.warehouse.retry import Deadline, never_ran
from dbx_backend.warehouse.wire import (
    ResultData,
    ResultManifest,
    State,
    StatementParameter,
    StatementResponse,
)

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Rows = list[list[JsonValue]]
# Under the 25 MiB INLINE cap, leaving room for how the warehouse measures it (unconfirmed).
INLINE_BYTE_LIMIT = 24 * 1024 * 1024
# Results stay available this long after success (reference §6.3).
RESULT_LIFETIME_S = 3600.0
# Converting a chunk this large takes long enough to stall other requests: do it in a thread.
THREAD_CONVERT_ROWS = 2_000
# At shutdown, background cancels get this long before they are given up.
DRAIN_TIMEOUT_S = 3.0
_Started = TypeVar("_Started")


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """How to run one query."""

    catalog: str | None = None
    schema: str | None = None
    row_limit: int | None = None
    byte_limit: int | None = None
    timeout_s: float = 60.0
    max_rows: int | None = None
    normalize: NormalizeOptions = field(default_factory=NormalizeOptions)
    query_tags: Mapping[str, str] = field(default_factory=dict)
    # A stream is read as fast as its client takes it: `timeout_s` bounds the wait for the
    # result, and reading it is bounded by the result's own lifetime on the warehouse.
    stream: bool = False
    # EXTERNAL_LINKS moves large results through presigned downloads, several at a time.
    disposition: Literal["INLINE", "EXTERNAL_LINKS"] = "INLINE"
    result_format: Literal["JSON_ARRAY", "ARROW_STREAM"] = "JSON_ARRAY"
    download_window: int = 4


@dataclass(frozen=True, slots=True)
class PollSchedule:
    """Delays between status polls: start small, grow, cap at a few seconds."""

    initial_s: float = 0.05
    factor: float = 1.5
    max_s: float = 2.0

    def delays(self) -> Iterator[float]:
        """An endless series of delays; the deadline bounds the loop."""
        delay = self.initial_s
        while True:
            yield delay
            delay = min(self.max_s, delay * self.factor)


@dataclass(slots=True)
class Timings:
    """Where a query's time went, for `Server-Timing`."""

    wait_s: float = 0.0
    fetch_s: float = 0.0
    convert_s: float = 0.0


@dataclass(slots=True)
class QueryResult:
    """A whole result, normalized."""

    statement_id: str
    columns: list[Column]
    rows: list[list[JsonValue]]
    truncated: bool
    timings: Timings
    stats: CallStats

    @property
    def row_count(self) -> int:
        """Rows returned."""
        return len(self.rows)


def choose_wait_timeout(remaining_s: float, preferred_s: int) -> str:
    """`wait_timeout` for submit: `0s` or 5..50 s (reference §3.3), within the deadline."""
    seconds = min(preferred_s, 50, int(remaining_s) - 1)
    return f"{seconds}s" if seconds >= 5 else "0s"


def execute_request(
    sql: str, parameters: Sequence[StatementParameter], options: QueryOptions
) -> dict[str, object]:
    """The execute body; the client adds `wait_timeout` per attempt. CONTINUE on wait timeout:
    we poll, and cancel ourselves when we give up."""
    body: dict[str, object] = {
        "statement": sql,
        "on_wait_timeout": "CONTINUE",
        "disposition": options.disposition,
        # ARROW_STREAM and CSV are only allowed with EXTERNAL_LINKS (reference §3.2).
        "format": options.result_format if options.disposition != "INLINE" else "JSON_ARRAY",
    }
    if parameters:
        body["parameters"] = [p.model_dump(exclude_none=True) for p in parameters]
    byte_limit = options.byte_limit
    if byte_limit is not None and options.disposition == "INLINE":
        # An INLINE result over 25 MiB fails the statement (reference §3.2); a byte_limit under
        # it truncates instead, which is what a capped answer promises.
        byte_limit = min(byte_limit, INLINE_BYTE_LIMIT)
    optional: dict[str, object] = {
        "catalog": options.catalog,
        "schema": options.schema,
        "row_limit": options.row_limit,
        "byte_limit": byte_limit,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    if options.query_tags:
        body["query_tags"] = [{"key": k, "value": v} for k, v in options.query_tags.items()]
    return body


def statement_failure(response: StatementResponse) -> StatementFailed:
    """The exception for a FAILED statement, carrying the warehouse's message and codes."""
    error = response.status.error
    return StatementFailed(
        error.message if error and error.message else "the statement failed",
        error_code=error.error_code if error else None,
        statement_id=response.statement_id,
        sql_state=response.status.sql_state,
    )


class QueryService:
    """Runs statements on one warehouse through a `WarehouseClient`."""

    def __init__(
        self,
        client: WarehouseClient,
        *,
        schedule: PollSchedule | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wait_timeout_s: int = 5,
    ) -> None:
        self.client = client
        self.schedule = schedule or PollSchedule()
        self.sleep = sleep
        self.clock = clock
        self.wait_timeout_s = wait_timeout_s
        self._background: set[asyncio.Task[None]] = set()
        # Submits whose statement is already due a cancel: one cancel each, however many
        # callers give up on the same submit.
        self._abandoned: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()

    def open(
        self,
        sql: str,
        params: Mapping[str, ParamScalar | TypedParam] | None = None,
        options: QueryOptions | None = None,
    ) -> OpenStatement:
        """Run `sql` to a terminal state in `async with`; then read rows from `batches()`."""
        options = options or QueryOptions()
        parameters = to_statement_parameters(params or {})
        return OpenStatement(self, sql, parameters, options)

    async def execute_query(
        self,
        sql: str,
        params: Mapping[str, ParamScalar | TypedParam] | None = None,
        options: QueryOptions | None = None,
    ) -> QueryResult:
        """Run `sql` and return its whole result (capped at `options.max_rows`)."""
        options = options or QueryOptions()
        async with self.open(sql, params, options) as statement:
            rows: list[list[JsonValue]] = []
            cap = options.max_rows
            truncated = statement.truncated
            async for batch in statement.batches():
                if cap is not None and len(rows) + len(batch) > cap:
                    rows.extend(batch[: cap - len(rows)])
                    truncated = True
                    break
                rows.extend(batch)
            return QueryResult(
                statement_id=statement.statement_id,
                columns=statement.columns,
                rows=rows,
                truncated=truncated,
                timings=statement.timings,
                stats=statement.stats,
            )

    async def cancel_quietly(self, statement_id: str) -> None:
        """Best-effort cancel: logged, never raised (we are already giving up)."""
        try:
            await self.client.cancel(statement_id)
        except WarehouseError as exc:
            log.warning("cancel of statement %s failed: %s", statement_id, exc)

    def cancel_in_background(self, statement_id: str) -> asyncio.Task[None]:
        """Cancel in a tracked task that outlives its caller; `drain()` waits for it."""
        return self._track(self.cancel_quietly(statement_id))

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def cancel_when_submitted(self, submit: asyncio.Future[StatementResponse]) -> None:
        """The caller left while the submit was in flight: cancel once the statement has an id."""
        self.cancel_when_started(submit, _running_statement)

    def cancel_when_started(
        self, start: asyncio.Future[_Started], running_id: Callable[[_Started], str | None]
    ) -> None:
        """Cancel the statement `start` gives, once `running_id` of its outcome names one that
        still runs. At most one cancel per `start`, however often it is abandoned."""
        if start in self._abandoned:
            return
        self._abandoned.add(start)

        async def cancel_later() -> None:
            try:
                statement_id = running_id(await start)
            except (Exception, asyncio.CancelledError):
                return  # nothing was started, or its failure was answered already
            if statement_id is not None:
                await self.cancel_quietly(statement_id)

        self._track(cancel_later())

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Wait for background cancels (at shutdown) for up to `timeout_s`, then give up."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout_s  # real time: the process is about to exit
        while self._background and (left_s := give_up_at - loop.time()) > 0:
            await asyncio.wait(set(self._background), timeout=left_s)
        left = set(self._background)
        if left:
            log.warning(
                "%d cancels did not finish within %g s; their statements run until the "
                "warehouse ends them",
                len(left),
                timeout_s,
            )
            for task in left:
                task.cancel()
            await asyncio.wait(left)


def _running_statement(response: StatementResponse) -> str | None:
    """The id of a statement that may still run, None when it reached a terminal state."""
    return None if response.status.state in State.TERMINAL else response.statement_id


class OpenStatement:
    """A statement being run: `async with` submits and waits; `batches()` reads its rows."""

    def __init__(
        self,
        service: QueryService,
        sql: str,
        parameters: Sequence[StatementParameter],
        options: QueryOptions,
    ) -> None:
        self.service = service
        self.sql = sql
        self.parameters = parameters
        self.options = options
        self.deadline = Deadline(options.timeout_s, service.clock)
        self.timings = Timings()
        self.stats = CallStats()
        self.statement_id = ""
        self.columns: list[Column] = []
        self.manifest = ResultManifest()
        self.first_chunk: ResultData | None = None

    @property
    def truncated(self) -> bool:
        """True when the warehouse cut the result (row_limit, byte_limit)."""
        return self.manifest.truncated

    @property
    def total_row_count(self) -> int:
        """Rows the warehouse says the result has."""
        return self.manifest.total_row_count

    @property
    def announced_rows(self) -> int | None:
        """Rows of the result, when the warehouse said (it may leave out a zero, §5)."""
        said = "total_row_count" in self.manifest.model_fields_set
        return self.manifest.total_row_count if said else None

    @property
    def announced_chunks(self) -> int | None:
        """Chunks of the result, when the warehouse said."""
        said = "total_chunk_count" in self.manifest.model_fields_set
        return self.manifest.total_chunk_count if said else None

    async def __aenter__(self) -> OpenStatement:
        self._stats_token = call_stats.set(self.stats)
        started = self.service.clock()
        try:
            response = await self._run_to_terminal()
        except BaseException:
            call_stats.reset(self._stats_token)
            raise
        finally:
            self.timings.wait_s = self.service.clock() - started
        self._accept(response)
        if self.options.stream:
            self.deadline = Deadline(RESULT_LIFETIME_S, self.service.clock)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        call_stats.reset(self._stats_token)

    async def _run_to_terminal(self) -> StatementResponse:
        client = self.service.client
        request = execute_request(self.sql, self.parameters, self.options)
        submit = asyncio.ensure_future(
            client.submit(request, deadline=self.deadline, wait_timeout=self._wait_timeout)
        )
        try:
            async with asyncio.timeout(self.deadline.remaining()):
                response = await asyncio.shield(submit)
                self.statement_id = response.statement_id
                response = await self._poll(response)
        except TimeoutError:
            self._finish("TIMED_OUT")
            self._abandon(submit)
            raise StatementTimedOut(
                f"the query did not finish within {self.options.timeout_s:g} s; "
                "a cancel was sent to the warehouse",
                statement_id=self.statement_id or None,
                may_have_run=True,
            ) from None
        except asyncio.CancelledError:
            # The caller went away (client disconnect, shutdown): stop the warehouse work too.
            self._finish("ABANDONED")
            self._abandon(submit)
            raise
        except WarehouseError as exc:
            self._finish("ERROR")
            if self.statement_id and exc.statement_id is None:
                exc.statement_id = self.statement_id
            # Once the warehouse named the statement it exists; before, only some failures
            # prove that the submit started nothing.
            exc.may_have_run = bool(self.statement_id) or not never_ran(exc)
            self._abandon(submit)
            raise
        return response

    def _abandon(self, submit: asyncio.Future[StatementResponse]) -> None:
        """We stop waiting: cancel the statement in the background (tracked, drained at
        shutdown) so the answer to our caller is not held up by the warehouse."""
        if not submit.done():
            self.service.cancel_when_submitted(submit)
        elif self.statement_id:
            self.service.cancel_in_background(self.statement_id)

    def _wait_timeout(self) -> str:
        return choose_wait_timeout(self.deadline.remaining(), self.service.wait_timeout_s)

    async def _poll(self, response: StatementResponse) -> StatementResponse:
        """GET the status with a growing interval until it is terminal or the deadline passes."""
        delays = self.service.schedule.delays()
        while response.status.state not in State.TERMINAL:
            # PENDING, RUNNING and states we do not know are never errors before the
            # deadline (reference §6.2): keep polling.
            remaining = self.deadline.remaining()
            if remaining <= 0:
                raise TimeoutError
            await self.service.sleep(min(next(delays), remaining))
            if self.deadline.expired:
                raise TimeoutError
            response = await self.service.client.get_statement(
                self.statement_id, deadline=self.deadline
            )
        return response

    def _finish(self, state: str) -> None:
        observer = self.service.client.observer
        if observer is not None:
            observer.statement_finished(state)

    def _accept(self, response: StatementResponse) -> None:
        """Read a terminal state as the reference says (§6.1)."""
        status, sid = response.status, response.statement_id
        self._finish(status.state if status.state in State.TERMINAL else "UNKNOWN")
        if status.state == State.FAILED:
            raise statement_failure(response)
        if status.state == State.CANCELED:
            raise StatementCanceled(
                "the statement was cancelled on the warehouse", statement_id=sid
            )
        if response.manifest is None or response.result is None:
            if status.state == State.CLOSED:
                raise StatementClosed(
                    "the statement's result is no longer available", statement_id=sid
                )
            raise ProtocolError("a finished statement came without its result", statement_id=sid)
        # SUCCEEDED, or CLOSED that still carries its result: a success.
        self.manifest = response.manifest
        self.first_chunk = response.result
        self.columns = columns_from_manifest(response.manifest, self.options.normalize)

    async def batches(self) -> AsyncIterator[list[list[JsonValue]]]:
        """The result's rows, one normalized list per chunk, in order."""
        converter = RowConverter(self.columns, self.options.normalize)
        expected_offset = 0
        try:
            async for row_offset, rows in self._chunks(converter):
                if row_offset != expected_offset:
                    raise ProtocolError(
                        f"a chunk starts at row {row_offset}, expected {expected_offset}",
                        statement_id=self.statement_id,
                    )
                expected_offset += len(rows)
                yield rows
        except TimeoutError:
            raise StatementTimedOut(
                f"the result was not read within {self.options.timeout_s:g} s",
                statement_id=self.statement_id,
                may_have_run=True,
            ) from None
        except WarehouseError as exc:
            # The statement has run: whatever failed while reading its result, sending the
            # request again would run it again.
            exc.may_have_run = True
            exc.statement_id = exc.statement_id or self.statement_id
            raise
        if expected_offset != self.manifest.total_row_count:
            raise ProtocolError(
                f"read {expected_offset} rows, the warehouse announced "
                f"{self.manifest.total_row_count}",
                statement_id=self.statement_id,
            )

    async def _chunks(
        self, converter: RowConverter
    ) -> AsyncIterator[tuple[int, list[list[JsonValue]]]]:
        """(row_offset, rows) per chunk, from INLINE data or external links."""
        chunk = self.first_chunk
        if chunk is not None and chunk.external_links is not None:
            reader = ExternalChunkReader(
                self.service.client,
                self.statement_id,
                self.manifest,
                chunk,
                converter,
                deadline=self.deadline,
                window=self.options.download_window,
            )
            chunks = reader.chunks()
            try:
                while True:
                    started = self.service.clock()
                    # The deadline bounds each wait for a chunk, never the time our caller
                    # spends between chunks (a timeout must not span a `yield`).
                    async with asyncio.timeout(self.deadline.remaining()):
                        item = await anext(chunks, None)
                    self.timings.fetch_s += self.service.clock() - started
                    if item is None:
                        return
                    yield item
            finally:
                await chunks.aclose()
        while chunk is not None:
            yield chunk.row_offset, await self._convert(converter, chunk.data_array or [])
            chunk = await self._next_chunk(chunk)

    async def _next_chunk(self, chunk: ResultData) -> ResultData | None:
        index, link = chunk.next_pointer()
        if index is None and link is None:
            return None
        started = self.service.clock()
        client = self.service.client
        async with asyncio.timeout(self.deadline.remaining()):
            if link:
                result = await client.follow_chunk_link(
                    self.statement_id, link, deadline=self.deadline
                )
            else:
                result = await client.get_chunk(
                    self.statement_id, index or 0, deadline=self.deadline
                )
        self.timings.fetch_s += self.service.clock() - started
        return result

    async def _convert(
        self, converter: RowConverter, data: list[list[str | None]]
    ) -> list[list[JsonValue]]:
        started = self.service.clock()
        if len(data) >= THREAD_CONVERT_ROWS:
            rows = await asyncio.to_thread(converter.convert_rows, data)
        else:
            rows = converter.convert_rows(data)
        self.timings.convert_s += self.service.clock() - started
        return rows
