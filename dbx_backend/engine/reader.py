"""The one result reader: a finished statement's rows, whether INLINE or via EXTERNAL_LINKS.

Two ways in, for every consumer:

* `chunks(form)`: every chunk in order, for buffered answers and streams, decoded into the
  response format's `ChunkForm` (JSON rows, NDJSON lines, Arrow batches). INLINE chunks follow
  the next-chunk pointers; link chunks are downloaded up to `window` at a time, handed on in
  order, so at most `window` chunks are in memory or in flight.
* `rows(start, end)`: rows `[start, end)` only, for pages. It reads the chunks that hold them,
  by index from the manifest's chunk list, or by following the pointers when the manifest has
  none (reference §5.3: not guaranteed for INLINE). Chunks may be read in any order and more
  than once (reference §4.2).

One place downloads a link (`_download`: presigned, without our credential, reference §9), one
refreshes a link that expired or is about to (`_refreshed`), one decides when converting goes
to a thread (`_convert`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dbx_backend.engine.normalize import JsonValue, RowConverter
from dbx_backend.warehouse.client import CallStats, WarehouseClient
from dbx_backend.warehouse.errors import LinkExpired, ProtocolError
from dbx_backend.warehouse.retry import Deadline
from dbx_backend.warehouse.rows import RowArray
from dbx_backend.warehouse.wire import ExternalLink, ResultData, ResultManifest

if TYPE_CHECKING:
    import pyarrow

# Refresh a link this close to its expiration instead of racing it.
EXPIRY_MARGIN = timedelta(seconds=15)
# Converting a chunk this large (rows, or bytes to decode) takes long enough to stall other
# requests: do it in a thread.
THREAD_CONVERT_ROWS = 2_000
THREAD_DECODE_BYTES = 256 * 1024
# Arrow chunks of one result converted at once by a form whose kernels release the GIL (a
# second conversion uses another core while the first runs); any other conversion holds the
# GIL throughout, and a result converts one such chunk at a time.
KERNEL_CONVERSIONS_AT_ONCE = 2
# A result's first rows handed on alone, before the rest of its first chunk is converted.
FIRST_PART_ROWS = 1_000

Rows = list[list[JsonValue]]
Part = TypeVar("Part")


class ChunkForm(Protocol[Part]):
    """What a chunk is decoded into for one response format; the one seam a format plugs into.

    A form may also say `converts_cheaply(schema)` (Arrow batches of `schema` cost about a
    copy: decoded on the event loop), take such a whole chunk's bytes as they are with
    `from_arrow_stream(data, table)` (None: it declines, and gets the batches), and say
    `converts_arrow_by_kernels = True` (its Arrow conversions release the GIL: several
    chunks of a result may convert at once)."""

    def from_cells(
        self, cells: list[Any], *, check_cells: bool = False, first_row: int = 0
    ) -> Part:
        """JSON_ARRAY rows (strings and nulls, reference §7.2), a slice of a chunk whose first
        row is the chunk's `first_row`; `check_cells` as for `RowConverter.convert_rows`
        (INLINE data, which no wire model checked)."""
        ...

    def from_arrow(self, batch: pyarrow.RecordBatch) -> Part:
        """One record batch of an ARROW_STREAM chunk."""
        ...

    def count(self, part: Part) -> int:
        """Rows in `part`."""
        ...

    def join(self, parts: list[Part]) -> Part:
        """Several parts (batches of a chunk, links of a chunk) as one, in order."""
        ...


class JsonRows:
    """The JSON rows form: every value normalized (buffered answers, pages, CSV)."""

    def __init__(self, converter: RowConverter) -> None:
        self.converter = converter

    def from_cells(
        self, cells: list[Any], *, check_cells: bool = False, first_row: int = 0
    ) -> Rows:
        """JSON_ARRAY rows, normalized."""
        return self.converter.convert_rows(cells, check_cells=check_cells, first_row=first_row)

    def from_arrow(self, batch: pyarrow.RecordBatch) -> Rows:
        """An Arrow batch's rows, normalized."""
        return self.converter.convert_arrow(batch)

    def count(self, part: Rows) -> int:
        """Rows in `part`."""
        return len(part)

    def join(self, parts: list[Rows]) -> Rows:
        """The rows of `parts`, in order."""
        return parts[0] if len(parts) == 1 else [row for part in parts for row in part]


@dataclass(slots=True)
class Timings:
    """Where a query's time went, for `Server-Timing`."""

    wait_s: float = 0.0
    fetch_s: float = 0.0
    convert_s: float = 0.0


def decode_cells(form: ChunkForm[Part], cells: RowArray, *, check_cells: bool = False) -> Part:
    """A chunk's JSON_ARRAY rows decoded into `form` a slice at a time: the cells of one slice
    are Python objects at once, never those of the whole chunk (five times its text)."""
    parts: list[Part] = []
    for first_row, rows in cells.slices():
        parts.append(form.from_cells(rows, check_cells=check_cells, first_row=first_row))
        del rows
    if not parts:
        return form.from_cells([], check_cells=check_cells)
    return form.join(parts)


def decode_chunk(result_format: str, data: bytes, form: ChunkForm[Part]) -> Part:
    """One downloaded chunk, decoded into `form`."""
    if result_format == "JSON_ARRAY":
        return decode_cells(form, RowArray.of_text(data))
    if result_format == "ARROW_STREAM":
        return decode_arrow(form, arrow_table(data))
    raise ProtocolError(f"result format {result_format} is not supported")


def converts_cheaply(form: ChunkForm[Any], schema: Any) -> bool:
    """Whether `form` converts Arrow batches of `schema` at about the cost of a copy (a form
    says so with `converts_cheaply(schema)`; any other is taken as costly)."""
    check = getattr(form, "converts_cheaply", None)
    return bool(check(schema)) if check is not None else False


def arrow_table(data: bytes) -> Any:  # pyarrow.Table
    """An ARROW_STREAM chunk's record batches, as one table (no copy of the data)."""
    pa = pyarrow_module()
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        return pa.Table.from_batches(list(reader), schema=reader.schema)
    except pa.ArrowInvalid:
        raise ProtocolError("a result chunk is not a valid Arrow stream") from None


def decode_arrow(form: ChunkForm[Part], table: Any, start: int = 0, end: int | None = None) -> Part:
    """Rows `[start, end)` of an ARROW_STREAM chunk's table (all by default) decoded into
    `form`, a record batch at a time."""
    if start or end is not None:
        table = table.slice(start, (table.num_rows if end is None else end) - start)
    if table.num_rows and not converts_cheaply(form, table.schema):
        # One batch for the whole slice: a conversion's fixed cost is paid once, and its parts
        # need no joining (the copy costs far less than either).
        table = table.combine_chunks()
    batches = [batch for batch in table.to_batches() if batch.num_rows]
    if not batches:
        pa = pyarrow_module()
        empty = [pa.array([], field.type) for field in table.schema]
        return form.from_arrow(pa.RecordBatch.from_arrays(empty, schema=table.schema))
    return form.join([form.from_arrow(batch) for batch in batches])


@functools.cache
def pyarrow_module() -> Any:  # pyarrow ships no type information
    """pyarrow, imported on first use, with the system allocator: Arrow's default pool keeps
    what it freed (about 60 MiB after one chunk), the system one gives it back."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    return pa


def _expiring(link: ExternalLink, now: datetime) -> bool:
    if not link.expiration:
        return False
    try:
        expires = datetime.fromisoformat(link.expiration.replace("Z", "+00:00"))
    except ValueError:
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires - now < EXPIRY_MARGIN


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
    return chunk.data_array.count() if chunk.data_array is not None else 0


class ResultReader:
    """Reads one statement's result through a `WarehouseClient`, within the query's deadline."""

    def __init__(
        self,
        client: WarehouseClient,
        statement_id: str,
        manifest: ResultManifest,
        first_chunk: ResultData,
        converter: RowConverter,
        *,
        deadline: Deadline,
        window: int = 4,
        stats: CallStats | None = None,
        timings: Timings | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.statement_id = statement_id
        self.manifest = manifest
        self.first_chunk = first_chunk
        self.converter = converter
        self.deadline = deadline
        self.window = max(1, window)
        self.stats = stats
        self.timings = timings or Timings()
        self.clock = clock
        self.now = now
        self._converting = asyncio.Semaphore(1)
        self._converting_by_kernels = asyncio.Semaphore(KERNEL_CONVERSIONS_AT_ONCE)

    # -- in order -------------------------------------------------------------------------

    async def chunks(
        self, form: ChunkForm[Part] | None = None
    ) -> AsyncGenerator[tuple[int, Part], None]:
        """(row_offset, part) for every chunk, in chunk order, decoded into `form` (JSON rows
        by default); stops its downloads on exit."""
        shape: ChunkForm[Any] = form if form is not None else JsonRows(self.converter)
        linked = self.first_chunk.external_links is not None
        source = self._linked_chunks(shape) if linked else self._inline_chunks(shape)
        try:
            while True:
                started, converted = self.clock(), self.timings.convert_s
                # The deadline bounds each wait for a chunk, never the time our caller spends
                # between chunks (a timeout must not span a `yield`).
                async with asyncio.timeout(self.deadline.remaining()):
                    item = await anext(source, None)
                waited = self.clock() - started
                self.timings.fetch_s += waited - (self.timings.convert_s - converted)
                if item is None:
                    return
                yield item
        finally:
            await source.aclose()

    async def _inline_chunks(self, form: ChunkForm[Part]) -> AsyncGenerator[tuple[int, Part], None]:
        chunk: ResultData | None = self._take_first_chunk()
        while chunk is not None:
            # Only the rows and the pointer are kept: once converted, the rows are dropped
            # before the next chunk is fetched, so one chunk's cells are held at a time.
            offset, pointer, cells = chunk.row_offset, chunk.next_pointer(), chunk.data_array
            rows = chunk.row_count
            chunk = None
            cells = cells or RowArray.of_rows([])
            convert = partial(decode_cells, form, cells, check_cells=True)
            rows, nbytes = max(rows, cells.parsed_rows), cells.nbytes
            del cells
            part = await self._convert(convert, rows, nbytes=nbytes)
            del convert
            yield offset, part
            del part
            chunk = await self._follow(*pointer)

    async def _linked_chunks(self, form: ChunkForm[Part]) -> AsyncGenerator[tuple[int, Part], None]:
        count = self.manifest.total_chunk_count
        pending: collections.deque[asyncio.Task[tuple[int, Part]]] = collections.deque()
        next_index = 0

        def fill_window() -> None:
            nonlocal next_index
            while len(pending) < self.window and next_index < count:
                pending.append(asyncio.ensure_future(self._linked_chunk(next_index, form)))
                next_index += 1

        try:
            first = self.first_chunk
            if count and first.chunk_index == 0 and len(first.external_links or ()) == 1:
                # What a reader waits for first: the first chunk is downloaded alone (sharing
                # the connection and the CPU with no other), and its first rows are handed on
                # before the rest of it is converted, while the window downloads the next.
                next_index = 1
                first_parts = self._first_linked_chunk(first, form, fill_window)
                async with contextlib.aclosing(first_parts):
                    async for item in first_parts:
                        yield item
            while pending or next_index < count:
                fill_window()
                yield await pending.popleft()
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _first_linked_chunk(
        self, chunk: ResultData, form: ChunkForm[Part], then: Callable[[], None]
    ) -> AsyncGenerator[tuple[int, Part], None]:
        """The first chunk (one link); `then` is called once it is downloaded. An Arrow chunk
        comes as two parts: its first `FIRST_PART_ROWS` rows, then the rest."""
        link = (chunk.external_links or ())[0]
        data = await self._download(link)
        then()
        head = FIRST_PART_ROWS
        if self.manifest.format != "ARROW_STREAM" or link.row_count <= head:
            yield link.row_offset, await self._decoded(link, data, form)
            return
        table = arrow_table(data)  # no copy: only the messages are read
        del data
        self._check_count(link, table.num_rows)
        yield link.row_offset, await self._arrow_part(form, table, 0, head)
        yield link.row_offset + head, await self._arrow_part(form, table, head, link.row_count)

    async def _linked_chunk(self, index: int, form: ChunkForm[Part]) -> tuple[int, Part]:
        chunk = await self._chunk(index)
        links = chunk.external_links or ()
        if not links:
            raise ProtocolError(
                f"chunk {index} came without a link", statement_id=self.statement_id
            )
        return links[0].row_offset, await self._linked_part(links, form)

    # -- by position ----------------------------------------------------------------------

    async def rows(self, start: int, end: int) -> Rows:
        """Rows `[start, end)` of the result, reading only the chunks that hold them."""
        if self.manifest.chunks:
            return await self._rows_by_index(start, end)
        return await self._rows_by_walking(start, end)

    async def head(self, limit: int) -> Rows:
        """Up to `limit` rows of the first chunk: a first page costs one chunk at most."""
        return await self._chunk_rows(self.first_chunk, 0, limit)

    async def _rows_by_index(self, start: int, end: int) -> Rows:
        rows: Rows = []
        for info in sorted(self.manifest.chunks, key=lambda c: c.row_offset):
            if info.row_offset + info.row_count <= start or info.row_offset >= end:
                continue
            chunk = await self._chunk(info.chunk_index)
            if _chunk_offset(chunk) != info.row_offset:
                raise ProtocolError(
                    f"chunk {info.chunk_index} starts at row {_chunk_offset(chunk)}, "
                    f"the manifest says {info.row_offset}",
                    statement_id=self.statement_id,
                )
            rows += await self._chunk_rows(chunk, max(start, info.row_offset), end)
        return rows

    async def _rows_by_walking(self, start: int, end: int) -> Rows:
        rows: Rows = []
        chunk: ResultData | None = self.first_chunk
        for _ in range(max(self.manifest.total_chunk_count, end + 1)):  # bounded: a loop guard
            if chunk is None:
                break
            chunk_end = _chunk_offset(chunk) + _chunk_length(chunk)
            if chunk_end > start:
                rows += await self._chunk_rows(chunk, max(start, _chunk_offset(chunk)), end)
            if chunk_end >= end:
                break
            chunk = await self._next(chunk)
        return rows

    async def _chunk_rows(self, chunk: ResultData, start: int, end: int) -> Rows:
        """Rows `[start, end)` (whole-result positions) of one chunk, normalized."""
        first_row = _chunk_offset(chunk)
        lo, hi = max(0, start - first_row), max(0, end - first_row)
        if chunk.external_links is not None:
            rows = JsonRows(self.converter)
            return (await self._linked_part(chunk.external_links, rows))[lo:hi]
        cells = chunk.data_array.take(lo, hi) if chunk.data_array else []
        convert = partial(self.converter.convert_rows, cells, check_cells=True)
        return await self._convert(convert, len(cells))

    # -- fetching and converting ----------------------------------------------------------

    async def _chunk(self, index: int) -> ResultData:
        """Chunk `index`: the statement's own first chunk, else from the chunk endpoint."""
        if index == self.first_chunk.chunk_index and (
            self.first_chunk.external_links or self.first_chunk.data_array is not None
        ):
            return self.first_chunk
        return await self.client.get_chunk(
            self.statement_id, index, deadline=self.deadline, stats=self.stats
        )

    def _take_first_chunk(self) -> ResultData:
        """The first chunk, for one pass in order: the reader keeps it without its rows (were
        they wanted again, they would be fetched), so they go once converted."""
        first = self.first_chunk
        if first.data_array:
            self.first_chunk = first.model_copy(update={"data_array": None})
        return first

    async def _next(self, chunk: ResultData) -> ResultData | None:
        """The chunk after `chunk`, by its internal link (kept verbatim) or its index."""
        return await self._follow(*chunk.next_pointer())

    async def _follow(self, index: int | None, link: str | None) -> ResultData | None:
        """The chunk a next-chunk pointer names, if any."""
        if link:
            return await self.client.follow_chunk_link(
                self.statement_id, link, deadline=self.deadline, stats=self.stats
            )
        if index is not None:
            return await self.client.get_chunk(
                self.statement_id, index, deadline=self.deadline, stats=self.stats
            )
        return None

    async def _linked_part(self, links: Sequence[ExternalLink], form: ChunkForm[Part]) -> Part:
        parts: list[Part] = []
        for link in links:
            parts.append(await self._decoded(link, await self._download(link), form))
        return form.join(parts)

    async def _decoded(self, link: ExternalLink, data: bytes, form: ChunkForm[Part]) -> Part:
        """One link's downloaded rows, decoded into `form` and counted against the link. Arrow
        batches that the form passes through are decoded here (a thread would only add its
        hop, one chunk at a time); others in a thread when large."""
        if self.manifest.format == "ARROW_STREAM":
            table = arrow_table(data)  # no copy: only the messages are read
            forwarded = self._forwarded(form, data, table)
            del data
            decoded = (
                await self._arrow_part(form, table, 0, table.num_rows)
                if forwarded is None
                else forwarded
            )
            del table, forwarded
        else:
            decode = partial(decode_chunk, self.manifest.format, data, form)
            decoded = await self._convert(decode, link.row_count, nbytes=len(data))
            del data, decode
        if link.row_count:
            self._check_count(link, form.count(decoded))
        return decoded

    def _check_count(self, link: ExternalLink, rows: int) -> None:
        """A link's chunk must hold the rows the link says it does."""
        if rows != link.row_count:
            raise ProtocolError(
                f"chunk {link.chunk_index} has {rows} rows, its link says {link.row_count}",
                statement_id=self.statement_id,
            )

    def _forwarded(self, form: ChunkForm[Part], data: bytes, table: Any) -> Part | None:
        """A whole Arrow chunk as the form takes the warehouse's bytes as they are
        (`from_arrow_stream`), when it passes the chunk through and does; else None."""
        whole = getattr(form, "from_arrow_stream", None)
        if whole is None or not converts_cheaply(form, table.schema):
            return None
        started = self.clock()
        part: Part | None = whole(data, table)
        self.timings.convert_s += self.clock() - started
        return part

    async def _arrow_part(self, form: ChunkForm[Part], table: Any, start: int, end: int) -> Part:
        """Rows `[start, end)` of an Arrow chunk in `form`: here when the form passes them
        through (a thread would only add its hop, one chunk at a time), else as `_convert`."""
        if converts_cheaply(form, table.schema):
            started = self.clock()
            part = decode_arrow(form, table, start, end)
            self.timings.convert_s += self.clock() - started
            return part
        work = partial(decode_arrow, form, table, start, end)
        by_kernels = bool(getattr(form, "converts_arrow_by_kernels", False))
        return await self._convert(work, end - start, by_kernels=by_kernels)

    async def _convert(
        self, work: Callable[[], Part], rows: int, *, nbytes: int = 0, by_kernels: bool = False
    ) -> Part:
        """Run `work`, in a thread when the chunk is large enough to stall other requests.

        One chunk of a result converts at a time, or `KERNEL_CONVERSIONS_AT_ONCE` when its
        form converts Arrow batches by kernels that release the GIL (downloads still overlap):
        conversion is CPU work, and each one in flight holds its chunk's intermediate values
        in memory.
        """
        if rows >= THREAD_CONVERT_ROWS or nbytes >= THREAD_DECODE_BYTES:
            async with self._converting_by_kernels if by_kernels else self._converting:
                started = self.clock()
                converted = await asyncio.to_thread(work)
        else:
            started = self.clock()
            converted = work()
        self.timings.convert_s += self.clock() - started
        return converted

    async def _download(self, link: ExternalLink) -> bytes:
        """One presigned chunk; a link that expired (or is about to) is refreshed once."""
        if _expiring(link, self.now()):
            link = await self._refreshed(link)
        try:
            return await self.client.download(link, deadline=self.deadline, stats=self.stats)
        except LinkExpired:
            fresh = await self._refreshed(link)
            return await self.client.download(fresh, deadline=self.deadline, stats=self.stats)

    async def _refreshed(self, link: ExternalLink) -> ExternalLink:
        """A fresh link for the same chunk, from the chunk endpoint (each call mints a new URL,
        reference §9)."""
        chunk = await self.client.get_chunk(
            self.statement_id, link.chunk_index, deadline=self.deadline, stats=self.stats
        )
        for fresh in chunk.external_links or ():
            if fresh.row_offset == link.row_offset:
                return fresh
        raise ProtocolError(
            f"the chunk endpoint gave no link for chunk {link.chunk_index}",
            statement_id=self.statement_id,
        )
