"""The statement engine: the life of every statement the service runs, written once.

    gate -> submit (shielded; cancelled if abandoned) -> poll -> result reader -> normalized rows

Every route goes through `QueryService`: `/api/query` and named queries (`execute_query`, or
`open` + `batches()` for streams), `/api/statements` (`start`, `status`, `rows`, `cancel`) and
the readiness probe. Polling is not retrying: the warehouse is healthy, the statement is just
not done. One `Deadline` bounds a query; whenever the service stops early (deadline, caller
gone, shutdown, an error while polling) a statement that may still run gets one cancel, sent in
the background by the process's `TaskOwner` so no answer waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar

from dbx_backend.engine.gate import Admitted, Gate
from dbx_backend.engine.json_answer import EncodedJsonRows, JsonAnswer, JsonAnswerWriter
from dbx_backend.engine.json_lines import JsonLines
from dbx_backend.engine.memory import (
    Estimator,
    MemoryBudget,
    MemoryBusy,
    Reservation,
    released_on_error,
)
from dbx_backend.engine.normalize import (
    Column,
    JsonValue,
    NormalizeOptions,
    RowConverter,
    columns_from_manifest,
)
from dbx_backend.engine.parameters import ParamScalar, TypedParam, to_statement_parameters
from dbx_backend.engine.reader import ChunkForm, JsonRows, Part, ResultReader, Timings
from dbx_backend.engine.tasks import DRAIN_TIMEOUT_S, TaskOwner
from dbx_backend.queries import NamedQuery
from dbx_backend.warehouse.client import CallStats, WarehouseClient
from dbx_backend.warehouse.errors import (
    NotFound,
    ProtocolError,
    ResponseLost,
    StatementCanceled,
    StatementClosed,
    StatementFailed,
    StatementTimedOut,
    WarehouseError,
    WarehouseUnavailable,
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
Params = Mapping[str, ParamScalar | TypedParam]
Statement = str | Admitted  # a string is admitted by the gate as ad-hoc SQL on its way in
# Under the 25 MiB INLINE cap, leaving room for how the warehouse measures it (unconfirmed).
INLINE_BYTE_LIMIT = 24 * 1024 * 1024
# Results stay available this long after success (reference §6.3).
RESULT_LIFETIME_S = 3600.0
# Without a budget of its own (tests, tools), a service's memory is not bounded.
UNBOUNDED_BYTES = 1 << 62
# Room kept under the budget for the end of a body cut at it (row count, statement id).
BODY_TAIL_BYTES = 1024
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
class QueryResult:
    """A whole result, normalized, with where its time went and what its calls cost."""

    statement_id: str
    columns: list[Column]
    rows: Rows
    truncated: bool
    timings: Timings
    stats: CallStats

    @property
    def row_count(self) -> int:
        """Rows returned."""
        return len(self.rows)


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
    # Held for `rows` in the memory budget until their body is sent (`Reservation.release`).
    reservation: Reservation | None = None

    @property
    def finished(self) -> bool:
        """True once the statement reached a terminal state (it no longer runs)."""
        return self.state in State.TERMINAL


@dataclass(frozen=True, slots=True)
class RowsPage:
    """Rows `[offset, offset + len(rows))` of a result; `state` says why a page may be empty."""

    state: str
    rows: Rows
    offset: int
    total_row_count: int
    # Held for `rows` in the memory budget until their body is sent (`Reservation.release`).
    reservation: Reservation | None = None

    @property
    def succeeded(self) -> bool:
        """True when the statement SUCCEEDED, so its rows can be read."""
        return self.state == State.SUCCEEDED


def body_bytes(
    estimator: Estimator, manifest: ResultManifest, columns: int, rows: int | None = None
) -> int:
    """The expected size of the JSON body of `rows` of a result (all of them by default),
    from its manifest: what a buffered answer or a page reserves before it reads a chunk."""
    total = manifest.total_row_count
    expected = estimator.body_bytes(
        manifest.format, byte_count=manifest.total_byte_count, row_count=total, columns=columns
    )
    if rows is not None and 0 <= rows < total:
        expected = expected * rows // total
    return expected


def reported_state(state: str) -> str:
    """The protocol's states as they are; a state it adds later is still running (§6.2)."""
    return state if state in State.KNOWN else State.RUNNING


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


def _result_of(response: StatementResponse) -> tuple[ResultManifest, ResultData]:
    if response.manifest is None:
        raise ProtocolError(
            "a finished statement came without its manifest", statement_id=response.statement_id
        )
    return response.manifest, response.result or ResultData(data_array=[])


def _running_statement(response: StatementResponse) -> str | None:
    """The id of a statement that may still run, None when it reached a terminal state."""
    return None if response.status.state in State.TERMINAL else response.statement_id


class QueryService:
    """The engine: runs statements on one warehouse through a `WarehouseClient`."""

    def __init__(
        self,
        client: WarehouseClient,
        *,
        schedule: PollSchedule | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wait_timeout_s: int = 5,
        call_timeout_s: float | None = None,
        gate: Gate | None = None,
        tasks: TaskOwner | None = None,
        memory: MemoryBudget | None = None,
    ) -> None:
        self.client = client
        self.schedule = schedule or PollSchedule()
        self.sleep = sleep
        self.clock = clock
        self.wait_timeout_s = wait_timeout_s
        # The budget of one status or page read of a statement.
        self.call_timeout_s = call_timeout_s or client.settings.query_timeout_s
        self.gate = gate or Gate.from_settings(client.settings)
        self.tasks = tasks if tasks is not None else TaskOwner()
        # Shared with the result cache's store (one budget per process).
        self.memory = memory or MemoryBudget(UNBOUNDED_BYTES, wait_s=0.0)
        # Submits whose statement is already due a cancel: one cancel each, however many
        # callers give up on the same submit.
        self._abandoned: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()

    # -- the gate ---------------------------------------------------------------------------

    async def admit(self, sql: str) -> Admitted:
        """Ad-hoc SQL, past the gate (refused: AdhocSqlDisabled, SqlTooLarge, SqlPolicyError)."""
        return await self.gate.admit(sql)

    async def admit_named(self, named: NamedQuery) -> Admitted:
        """A named query of this service, past the gate."""
        return await self.gate.admit_named(named)

    # -- running a statement to its result --------------------------------------------------

    def open(
        self,
        statement: Statement,
        params: Params | None = None,
        options: QueryOptions | None = None,
    ) -> OpenStatement:
        """Run `statement` to a terminal state in `async with`; then read rows from `batches()`."""
        options = options or QueryOptions()
        parameters = to_statement_parameters(params or {})
        return OpenStatement(self, statement, parameters, options)

    async def execute_query(
        self,
        statement: Statement,
        params: Params | None = None,
        options: QueryOptions | None = None,
    ) -> QueryResult:
        """Run `statement` and return its whole result (capped at `options.max_rows`)."""
        return await self.collect(self.open(statement, params, options))

    async def collect(self, opened: OpenStatement) -> QueryResult:
        """Run an opened statement and return its whole result (capped at `max_rows`); the
        caller may read `opened.statement_id` meanwhile (e.g. when it gives up)."""
        options = opened.options
        async with opened:
            rows: Rows = []
            cap = options.max_rows
            truncated = opened.truncated
            async for batch in opened.batches():
                if cap is not None and len(rows) + len(batch) > cap:
                    rows.extend(batch[: cap - len(rows)])
                    truncated = True
                    break
                rows.extend(batch)
            return QueryResult(
                statement_id=opened.statement_id,
                columns=opened.columns,
                rows=rows,
                truncated=truncated,
                timings=opened.timings,
                stats=opened.stats,
            )

    async def answer_json(self, opened: OpenStatement) -> JsonAnswer:
        """Run an opened statement and encode its result as the buffered JSON answer, chunk
        by chunk, within its memory reservation, which grows when the estimate was low and
        which the answer holds until its body is sent (`JsonAnswer.release`). An answer larger
        than the whole budget is cut at it (`truncated`); MemoryBusy when no room came."""
        options, budget = opened.options, self.memory
        async with opened:
            reservation = opened.take_reservation()
            try:
                writer = JsonAnswerWriter(
                    opened.columns,
                    max_rows=options.max_rows,
                    max_bytes=max(0, budget.total - BODY_TAIL_BYTES),
                )
                form = EncodedJsonRows(RowConverter(opened.columns, options.normalize))
                async with aclosing(opened.parts(form)) as parts:
                    async for part in parts:
                        await reservation.grow_to(writer.size_with(part))
                        writer.append(part)
                        del part  # before the next chunk arrives
                        if writer.full:
                            break
                body, etag = writer.finish(opened.statement_id, truncated=opened.truncated)
            except BaseException:
                reservation.release()
                raise
        if writer.cut_at_bytes:
            budget.note_truncated()
        manifest = opened.manifest
        if not writer.truncated:  # a whole result: its size teaches the estimate
            budget.estimator.learn(
                manifest.format,
                byte_count=manifest.total_byte_count,
                row_count=writer.row_count,
                columns=len(opened.columns),
                body_bytes=len(body),
            )
        reservation.shrink_to(len(body))
        answer = JsonAnswer(
            statement_id=opened.statement_id,
            body=body,
            etag=etag,
            row_count=writer.row_count,
            truncated=writer.truncated,
            timings=opened.timings,
            stats=opened.stats,
            reservation=reservation,
            memory_wait_s=reservation.waited_s,
        )
        # Whoever holds the answer releases it once sent; an answer nobody sends (its caller
        # left, others took the shared result) releases when it is dropped.
        weakref.finalize(answer, reservation.release)
        return answer

    @asynccontextmanager
    async def submitted(
        self,
        statement: Statement,
        parameters: Sequence[StatementParameter],
        options: QueryOptions,
        *,
        deadline: Deadline,
        stats: CallStats | None = None,
        waiting: Deadline | None = None,
    ) -> AsyncIterator[StatementResponse]:
        """The one submit: past the gate, then POSTed in a task of its own, and cancelled once
        the warehouse names it if the `async with` ends early (deadline, caller gone, shutdown,
        an error), unless it already reached a terminal state. The warehouse holds the answer
        for `SUBMIT_WAIT_TIMEOUT_S`, or for most of `waiting` when the caller said how long."""

        def wait_timeout() -> str:
            if waiting is None:
                return choose_wait_timeout(deadline.remaining(), self.wait_timeout_s)
            return choose_wait_timeout(min(deadline.remaining(), waiting.remaining()), 50)

        admitted = await self.gate.admitted(statement)
        body = execute_request(admitted.sql, parameters, options)
        submit = self.tasks.spawn(
            self.client.submit(body, deadline=deadline, wait_timeout=wait_timeout, stats=stats)
        )
        try:
            yield await asyncio.shield(submit)
        except BaseException:
            self.cancel_when_started(submit, _running_statement)
            raise

    # -- statements that outlive the request (/api/statements) ------------------------------

    async def start(
        self, statement: Statement, params: Params, options: QueryOptions, *, wait_s: float = 0.0
    ) -> StatementInfo:
        """Start `statement`; the warehouse holds the answer for most of `wait_s` (if 5 s or
        more) or answers at once. FAILED raises; `wait_until_end` waits on from there.

        The statement keeps running after we return: only `cancel` stops it (reference §4.3).
        """
        deadline = Deadline(options.timeout_s, self.clock)
        waiting = Deadline(wait_s, self.clock)
        parameters = to_statement_parameters(params)
        try:
            async with (
                asyncio.timeout(deadline.remaining()),
                self.submitted(
                    statement, parameters, options, deadline=deadline, waiting=waiting
                ) as response,
            ):
                pass
        except TimeoutError:
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
        return StatementInfo(response.statement_id, reported_state(response.status.state))

    async def wait_until_end(self, info: StatementInfo, wait_s: float) -> StatementInfo:
        """Poll until the statement ends or `wait_s` passes (it then keeps running); FAILED
        raises, as at submit."""
        waiting = Deadline(wait_s, self.clock)
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
            state = reported_state(response.status.state)
        return StatementInfo(info.statement_id, state)

    async def status(
        self, statement_id: str, *, first_page_rows: int, normalize: NormalizeOptions
    ) -> StatementInfo:
        """The statement's state; when SUCCEEDED, schema, totals and up to `first_page_rows`
        rows from its first chunk; when FAILED, the failure (never raised: it is the state's
        answer). CANCELED and CLOSED are states."""
        deadline = Deadline(self.call_timeout_s, self.clock)
        async with _answer_within(deadline, statement_id):
            response = await self.client.get_statement(statement_id, deadline=deadline)
            state = response.status.state
            if state == State.FAILED:
                return StatementInfo(statement_id, state, failure=statement_failure(response))
            if state != State.SUCCEEDED:
                return StatementInfo(response.statement_id, reported_state(state))
            manifest, first = _result_of(response)
            columns = columns_from_manifest(manifest, normalize)
            rows: Rows = []
            reservation = None
            if first_page_rows > 0 and manifest.total_row_count > 0:
                reader = self.reader(statement_id, manifest, first, columns, normalize, deadline)
                reservation = await self.reserve_body(manifest, len(columns), first_page_rows)
                with released_on_error(reservation):
                    rows = await reader.head(first_page_rows)
        return StatementInfo(
            response.statement_id,
            state,
            columns=columns,
            total_row_count=manifest.total_row_count,
            truncated=manifest.truncated,
            rows=rows,
            reservation=reservation,
        )

    async def rows(
        self, statement_id: str, offset: int, limit: int, normalize: NormalizeOptions
    ) -> RowsPage:
        """Rows `[offset, offset + limit)`, reading only the chunks that hold them, in order.

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
                return RowsPage(reported_state(state), [], offset, 0)
            manifest, first = _result_of(response)
            total = manifest.total_row_count
            end = min(offset + limit, total)
            if offset >= end:
                return RowsPage(state, [], offset, total)
            columns = columns_from_manifest(manifest, normalize)
            reader = self.reader(statement_id, manifest, first, columns, normalize, deadline)
            reservation = await self.reserve_body(manifest, len(columns), end - offset)
            with released_on_error(reservation):
                rows = await reader.rows(offset, end)
        return RowsPage(state, rows, offset, total, reservation)

    async def reserve_body(
        self, manifest: ResultManifest, columns: int, rows: int | None = None
    ) -> Reservation:
        """The memory budget's share of a JSON body of `rows` of a result (all by default),
        its expected size, taken before a chunk is read: buffered answers and pages alike.
        MemoryBusy when no room came within `MEMORY_WAIT_S`."""
        return await self.memory.reserve(body_bytes(self.memory.estimator, manifest, columns, rows))

    async def state_of(self, statement_id: str, *, timeout_s: float) -> str | None:
        """The statement's state, or None when the warehouse no longer knows it."""
        try:
            response = await self.client.get_statement(
                statement_id, deadline=Deadline(timeout_s, self.clock)
            )
        except NotFound:
            return None
        return response.status.state

    def reader(
        self,
        statement_id: str,
        manifest: ResultManifest,
        first: ResultData,
        columns: list[Column],
        normalize: NormalizeOptions,
        deadline: Deadline,
        *,
        window: int = 1,
        stats: CallStats | None = None,
        timings: Timings | None = None,
    ) -> ResultReader:
        """The result reader of one finished statement (the one way rows are read)."""
        converter = RowConverter(columns, normalize)
        return ResultReader(
            self.client,
            statement_id,
            manifest,
            first,
            converter,
            deadline=deadline,
            window=window,
            stats=stats,
            timings=timings,
            clock=self.clock,
        )

    # -- cancelling -------------------------------------------------------------------------

    async def cancel(self, statement_id: str) -> None:
        """Ask the warehouse to cancel; it may still finish first (reference §4.3)."""
        await self.client.cancel(statement_id)

    async def cancel_quietly(self, statement_id: str) -> None:
        """Best-effort cancel: logged, never raised (we are already giving up)."""
        try:
            await self.client.cancel(statement_id)
        except WarehouseError as exc:
            log.warning("cancel of statement %s failed: %s", statement_id, exc)

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

        self.tasks.spawn(cancel_later())

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Wait for background work (at shutdown) for up to `timeout_s`, then give up."""
        await self.tasks.drain(timeout_s)


class OpenStatement:
    """A statement being run: `async with` submits and waits; `batches()` reads its rows."""

    def __init__(
        self,
        service: QueryService,
        statement: Statement,
        parameters: Sequence[StatementParameter],
        options: QueryOptions,
    ) -> None:
        self.service = service
        self.statement = statement
        self.parameters = parameters
        self.options = options
        self.deadline = Deadline(options.timeout_s, service.clock)
        self.timings = Timings()
        self.stats = CallStats()
        self.statement_id = ""
        self.columns: list[Column] = []
        self.manifest = ResultManifest()
        self.first_chunk: ResultData | None = None
        # Its share of the memory budget, from the manifest until `async with` ends.
        self.reservation: Reservation | None = None
        self.memory_wait_s = 0.0  # how long it waited for that share

    @property
    def truncated(self) -> bool:
        """True when the warehouse cut the result (row_limit, byte_limit)."""
        return self.manifest.truncated

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
        started = self.service.clock()
        try:
            response = await self._run_to_terminal()
        finally:
            self.timings.wait_s = self.service.clock() - started
        self._accept(response)
        await self._reserve()
        if self.options.stream:
            self.deadline = Deadline(RESULT_LIFETIME_S, self.service.clock)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.reservation is not None:
            self.reservation.release()
            self.reservation = None

    def take_reservation(self) -> Reservation:
        """The reservation, now the caller's to release (a body outlives the statement)."""
        reservation, self.reservation = self.reservation, None
        if reservation is None:
            raise RuntimeError("take_reservation() is called inside `async with`")
        return reservation

    async def _reserve(self) -> None:
        """Reserve what reading the result will hold: the whole body of a buffered answer,
        the window of a stream. Refused, the statement is cancelled: nobody will read it."""
        try:
            if self.options.stream:
                self.reservation = await self.service.memory.reserve(self.window_bytes())
            else:
                cap = self.options.max_rows
                self.reservation = await self.service.reserve_body(
                    self.manifest, len(self.columns), cap if cap is not None and cap > 0 else None
                )
        except MemoryBusy as exc:
            self.memory_wait_s, exc.statement_id = exc.waited_s, self.statement_id
            self.service.tasks.spawn(self.service.cancel_quietly(self.statement_id))
            raise
        self.memory_wait_s = self.reservation.waited_s

    def window_bytes(self) -> int:
        """Bytes a stream's window is expected to hold at once, from the manifest."""
        manifest, estimator = self.manifest, self.service.memory.estimator
        rows, size = manifest.total_row_count, manifest.total_byte_count
        chunks = max(1, manifest.total_chunk_count)
        biggest = max((c.byte_count for c in manifest.chunks), default=0)
        size = biggest or size // chunks
        rows = max((c.row_count for c in manifest.chunks), default=rows // chunks)
        window = min(chunks, self.options.download_window)
        one = estimator.body_bytes(
            manifest.format, byte_count=size, row_count=rows, columns=len(self.columns)
        )
        return window * one

    async def _run_to_terminal(self) -> StatementResponse:
        try:
            async with (
                asyncio.timeout(self.deadline.remaining()),
                self.service.submitted(
                    self.statement,
                    self.parameters,
                    self.options,
                    deadline=self.deadline,
                    stats=self.stats,
                ) as response,
            ):
                self.statement_id = response.statement_id
                return await self._poll(response)
        except TimeoutError:
            raise self._timed_out() from None
        except asyncio.CancelledError:
            # The caller went away (client disconnect, shutdown): its cancel is on its way.
            self._finish("ABANDONED")
            raise
        except WarehouseError as exc:
            if isinstance(exc, WarehouseUnavailable) and self.deadline.expired:
                # A warehouse call's own timeout is cut to the deadline and may fire first:
                # that is the deadline passing, not the warehouse failing.
                raise self._timed_out() from None
            self._finish("ERROR")
            if self.statement_id and exc.statement_id is None:
                exc.statement_id = self.statement_id
            # Once the warehouse named the statement it exists; before, only some failures
            # prove that the submit started nothing.
            exc.may_have_run = bool(self.statement_id) or not never_ran(exc)
            raise

    def _timed_out(self) -> StatementTimedOut:
        self._finish("TIMED_OUT")
        return StatementTimedOut(
            f"the query did not finish within {self.options.timeout_s:g} s; "
            "a cancel was sent to the warehouse",
            statement_id=self.statement_id or None,
            may_have_run=True,
        )

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
                self.statement_id, deadline=self.deadline, stats=self.stats
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

    def json_rows(self) -> JsonRows:
        """The form of normalized JSON rows, with this query's options."""
        return JsonRows(RowConverter(self.columns, self.options.normalize))

    def json_lines(self) -> JsonLines:
        """The form of NDJSON lines, with this query's options."""
        return JsonLines(self.columns, self.options.normalize)

    def batches(self) -> AsyncGenerator[Rows, None]:
        """The result's rows, one normalized list per chunk, in order."""
        return self.parts(self.json_rows())

    async def parts(self, form: ChunkForm[Part]) -> AsyncGenerator[Part, None]:
        """The result, one part per chunk in `form` (the response format's), in order."""
        if self.first_chunk is None:
            raise RuntimeError("parts() are read inside `async with`, after the statement ran")
        reader = self.service.reader(
            self.statement_id,
            self.manifest,
            self.first_chunk,
            self.columns,
            self.options.normalize,
            self.deadline,
            window=self.options.download_window,
            stats=self.stats,
            timings=self.timings,
        )
        chunks = reader.chunks(form)
        # The reader holds the first chunk's rows now, and lets them go once converted.
        self.first_chunk = self.first_chunk.model_copy(update={"data_array": None})
        expected_offset = 0
        try:
            async for row_offset, part in chunks:
                if row_offset != expected_offset:
                    raise ProtocolError(
                        f"a chunk starts at row {row_offset}, expected {expected_offset}",
                        statement_id=self.statement_id,
                    )
                expected_offset += form.count(part)
                yield part
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
        finally:
            await chunks.aclose()
        if expected_offset != self.manifest.total_row_count:
            raise ProtocolError(
                f"read {expected_offset} rows, the warehouse announced "
                f"{self.manifest.total_row_count}",
                statement_id=self.statement_id,
            )
