"""A stream's rows on their way from the flight that reads them to the request that leads it.

A streamed request (NDJSON, CSV) that runs a statement does so in a flight of the `Coalescer`,
like a buffered one, so identical requests in flight share it. The flight reads the result
and hands each chunk, already encoded for the leading request's client, through a
`LiveResult`; that request writes them as they come. While the rows read so far would fit a
cache entry (and a buffered answer), the flight also keeps their JSON (`Tee`): at the end the
whole result becomes an entry, stored when it may be and handed to every identical request
that waited, whatever its format. Past that size the copy is dropped at once, the waiters are
told to run statements of their own (sharing more would hold the rows for the slowest
reader), and the leading request reads the rest itself, at its client's pace.

Memory stays bounded: the copy and the chunks read ahead of the leading client hold their
bytes in the memory budget as the cache does (`hold_for_cache`), and give up the copy rather
than wait when the budget has no room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from dbx_backend.engine.json_answer import EncodedJsonRows, EncodedRows, JsonAnswerWriter
from dbx_backend.engine.memory import MemoryBudget
from dbx_backend.engine.normalize import RowConverter
from dbx_backend.engine.query_service import OpenStatement
from dbx_backend.engine.reader import ChunkForm, converts_cheaply

log = logging.getLogger(__name__)

Part = TypeVar("Part")
Piece = bytes | memoryview


class StreamShape(Protocol[Part]):
    """How one streamed format reads and writes a result (the API's writer, as the flight
    sees it): the chunk form, the bytes before the rows, each chunk's bytes, and its rows as
    JSON for the shared copy (None when the format keeps none)."""

    @property
    def form(self) -> ChunkForm[Part]: ...

    def header(self, opened: OpenStatement) -> bytes: ...

    def encode(self, part: Part) -> list[Piece]: ...

    def json_rows(self, part: Part) -> EncodedRows | None: ...


class PairedForm(Generic[Part]):
    """A stream's chunk form that also writes each chunk as the JSON answer's rows while the
    flight keeps a copy (for formats whose parts are not JSON, such as Arrow batches): each
    part is `(the stream's part, its JSON rows or None)`. Decoding twice costs CPU, and only
    while the result may still become an entry."""

    def __init__(self, form: ChunkForm[Part], live: LiveResult[Any], opened: OpenStatement):
        self.form = form
        self.live = live
        # The copy's values follow the JSON answer's rules for this request (LONGs as numbers
        # for Arrow, whose key says so).
        self.json = EncodedJsonRows(RowConverter(opened.columns, opened.options.normalize))

    def from_cells(
        self, cells: list[Any], *, check_cells: bool = False, first_row: int = 0
    ) -> tuple[Part, EncodedRows | None]:
        """JSON_ARRAY rows: the stream's part first (it leaves the cells as they are), then
        the copy's rows, which consume the list."""
        part = self.form.from_cells(cells, check_cells=check_cells, first_row=first_row)
        copied = (
            self.json.from_cells(cells, check_cells=check_cells, first_row=first_row)
            if self.live.copying
            else None
        )
        return part, copied

    def from_arrow(self, batch: Any) -> tuple[Part, EncodedRows | None]:
        """An Arrow batch, in both forms."""
        copied = self.json.from_arrow(batch) if self.live.copying else None
        return self.form.from_arrow(batch), copied

    def from_arrow_stream(self, data: bytes, table: Any) -> tuple[Part, EncodedRows | None] | None:
        """A whole Arrow chunk as the stream's form takes its bytes, while no copy is kept."""
        whole = getattr(self.form, "from_arrow_stream", None)
        if self.live.copying or whole is None:
            return None
        part: Part | None = whole(data, table)
        return None if part is None else (part, None)

    def converts_cheaply(self, schema: Any) -> bool:
        """Cheap when no JSON copy is kept and the stream's form is cheap for `schema`."""
        return not self.live.copying and converts_cheaply(self.form, schema)

    def count(self, part: tuple[Part, EncodedRows | None]) -> int:
        """Rows in `part`."""
        return self.form.count(part[0])

    def join(self, parts: list[tuple[Part, EncodedRows | None]]) -> tuple[Part, EncodedRows | None]:
        """Several parts as one, in order (the copy's only when every part has one)."""
        copies = [copy for _, copy in parts if copy is not None]
        joined = self.json.join(copies) if len(copies) == len(parts) else None
        return self.form.join([p for p, _ in parts]), joined


@dataclass(frozen=True, slots=True)
class TeeLimits:
    """What a result may be to become an entry: at most these rows and JSON bytes."""

    max_rows: int
    max_bytes: int


def cannot_fit(rows: int | None, width: int, limits: TeeLimits) -> bool:
    """Whether a result announced with `rows` rows of `width` columns is sure to outgrow
    `limits`: more rows, or more JSON bytes than its rows take at the least (each `[v,...]`
    with one byte per value, a comma between rows). A copy of such a result would only cost
    CPU until it is dropped."""
    if rows is None:
        return False
    least_bytes = rows * (2 * width + 1 if width else 2) + max(rows - 1, 0)
    return rows > limits.max_rows or least_bytes > limits.max_bytes


class Tee:
    """The JSON copy of a streamed result, kept while it fits `TeeLimits` and the budget;
    none is made of a result announced too large for them."""

    def __init__(self, opened: OpenStatement, limits: TeeLimits, budget: MemoryBudget) -> None:
        self.limits = limits
        self.budget = budget
        self.writer: JsonAnswerWriter | None = (
            None
            if cannot_fit(opened.announced_rows, len(opened.columns), limits)
            else JsonAnswerWriter(opened.columns, max_rows=None, max_bytes=None)
        )
        self.held = 0

    @property
    def kept(self) -> bool:
        """True while the copy is whole."""
        return self.writer is not None

    def add(self, rows: EncodedRows | None) -> None:
        """Append a chunk's rows, or drop the copy when they would not fit."""
        writer = self.writer
        if writer is None:
            return
        if rows is None:
            self.drop()
            return
        size = writer.size_with(rows) - writer.size
        over = (
            writer.row_count + rows.rows > self.limits.max_rows
            or writer.size + size > self.limits.max_bytes
        )
        if over or not self.budget.hold_for_cache(size):
            self.drop()
            return
        self.held += size
        writer.append(rows)

    def finish(self, statement_id: str, *, truncated: bool) -> tuple[bytes, str, int] | None:
        """The whole result's JSON answer (body, ETag, rows), or None when it was dropped."""
        writer = self.writer
        if writer is None:
            return None
        body, etag = writer.finish(statement_id, truncated=truncated)
        rows = writer.row_count
        self.drop()
        return body, etag, rows

    def drop(self) -> None:
        """Forget the copy and give its bytes back."""
        self.writer = None
        if self.held:
            self.budget.release_from_cache(self.held)
            self.held = 0


class LiveResult(Generic[Part]):
    """The channel between a flight reading a stream's result and the request that leads it.

    The flight: `begin` once the statement ended well, `put` each chunk's bytes, then `end`,
    `fail`, or `hand_over` the rest of the reading. The request: await `began`, write
    `header`, iterate `pieces()`, and `close()` when done or gone.
    """

    def __init__(
        self, shape_for: Callable[[OpenStatement], StreamShape[Part]], *, status: str = "miss"
    ) -> None:
        self.shape_for = shape_for
        self.status = status  # the request's cache outcome: miss, or bypass when not stored
        self.began: asyncio.Future[OpenStatement] = asyncio.get_running_loop().create_future()
        self.header = b""
        self.opened: OpenStatement | None = None
        self.shape: StreamShape[Part] | None = None
        self.rows = 0  # rows handed to the request so far
        self.copying = True  # the flight still keeps a JSON copy of the rows
        self.detached = False  # the request left (or never came): nobody reads
        self.place: asyncio.Task[Any] | None = None  # the request's place among the waiters
        self._queue: deque[tuple[list[Piece], int, int]] = deque()  # pieces, rows, bytes held
        self._ready = asyncio.Event()
        self._ended = False
        self._failure: BaseException | None = None
        self._rest: AsyncIterator[Part] | None = None
        self._rest_shape: StreamShape[Part] | None = None
        self._owned: AsyncExitStack | None = None
        self._budget: MemoryBudget | None = None

    # -- the flight's side -----------------------------------------------------------------

    def begin(self, opened: OpenStatement, header: bytes) -> None:
        """The statement ended well: its columns are known, the request may send headers."""
        self.opened, self.header = opened, header
        if not self.began.done():
            self.began.set_result(opened)

    def put(self, pieces: list[Piece], rows: int, budget: MemoryBudget) -> bool:
        """Queue a chunk's bytes for the request; False when the budget had no room for them
        (they are queued all the same: the flight then stops reading ahead)."""
        size = sum(len(piece) for piece in pieces)
        held = size if budget.hold_for_cache(size) else 0
        self._budget = budget
        self._queue.append((pieces, rows, held))
        self._ready.set()
        return held == size

    def end(self) -> None:
        """Every chunk was put."""
        self._ended = True
        self._ready.set()

    def fail(self, exc: BaseException) -> None:
        """Reading failed: the request ends its stream with this error."""
        self._failure = exc
        if not self.began.done():
            self.began.set_exception(exc)
            self.began.exception()  # retrieved: the flight's waiters receive it too
        self._ready.set()

    def hand_over(
        self, rest: AsyncIterator[Part], shape: StreamShape[Part], owned: AsyncExitStack
    ) -> None:
        """The flight lets go: the request reads `rest` itself, and closes `owned` (the
        statement, its slot) when it is done."""
        self._rest, self._rest_shape, self._owned = rest, shape, owned
        self._ready.set()

    # -- the request's side ----------------------------------------------------------------

    async def pieces(self) -> AsyncIterator[tuple[list[Piece], int]]:
        """Each chunk's bytes and rows, in order; raises the reading's failure."""
        while True:
            if self._queue:
                pieces, rows, size = self._queue.popleft()
                if self._budget is not None and size:
                    self._budget.release_from_cache(size)
                self.rows += rows
                yield pieces, rows
                continue
            if self._failure is not None:
                raise self._failure
            if self._rest is not None and self._rest_shape is not None:
                async for part in self._rest:
                    rows = self._rest_shape.form.count(part)
                    self.rows += rows
                    yield self._rest_shape.encode(part), rows
                return
            if self._ended:
                return
            self._ready.clear()
            await self._ready.wait()

    async def close(self) -> None:
        """The request is done (or gone): stop reading for it, leave the flight."""
        self.detached = True
        while self._queue:
            _, _, size = self._queue.popleft()
            if self._budget is not None and size:
                self._budget.release_from_cache(size)
        if self.place is not None and not self.place.done():
            self.place.cancel()  # the statement stops if nobody else waits for it
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.place
        if self._rest is not None:
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        if self._owned is not None:
            owned, self._owned = self._owned, None
            await owned.aclose()


async def read_live(
    opened: OpenStatement,
    live: LiveResult[Any],
    owned: AsyncExitStack,
    *,
    limits: TeeLimits,
    budget: MemoryBudget,
) -> tuple[bytes, str, int] | None:
    """Read a streamed statement's result for the request leading `live` and for the waiters:
    the whole result's JSON answer when it fits `limits`, else None once it did not (the
    request reads the rest). Owns `owned` (the statement and its slot) from here on."""
    shape = live.shape = live.shape_for(opened)
    tee = Tee(opened, limits, budget)
    live.copying = tee.kept  # before the first chunk is decoded (a paired form reads it)
    parts = opened.parts(shape.form)
    handed = False
    try:
        try:
            live.begin(opened, shape.header(opened))
            async for part in parts:
                tee.add(shape.json_rows(part))
                live.copying = tee.kept
                if live.detached:
                    if not tee.kept:
                        return None  # nobody reads, and nothing to share: stop
                    continue
                queued = live.put(shape.encode(part), shape.form.count(part), budget)
                if not tee.kept or not queued:
                    if not queued:  # no room to read ahead: the request reads at its pace
                        tee.drop()
                    live.hand_over(parts, shape, owned)
                    handed = True
                    return None
        except BaseException as exc:
            live.fail(exc)
            raise
        live.end()
        return tee.finish(opened.statement_id, truncated=opened.truncated)
    finally:
        tee.drop()
        live.copying = False
        if not handed:
            await parts.aclose()
            await owned.aclose()
