"""The one result reader: a finished statement's rows, whether INLINE or via EXTERNAL_LINKS.

Two ways in, for every consumer:

* `chunks()`: every chunk in order, for buffered answers and streams. INLINE chunks follow
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
import functools
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson

from dbx_backend.engine.normalize import JsonValue, RowConverter
from dbx_backend.warehouse.client import CallStats, WarehouseClient
from dbx_backend.warehouse.errors import LinkExpired, ProtocolError
from dbx_backend.warehouse.retry import Deadline
from dbx_backend.warehouse.wire import ExternalLink, ResultData, ResultManifest

# Refresh a link this close to its expiration instead of racing it.
EXPIRY_MARGIN = timedelta(seconds=15)
# Converting a chunk this large (rows, or bytes to decode) takes long enough to stall other
# requests: do it in a thread.
THREAD_CONVERT_ROWS = 2_000
THREAD_DECODE_BYTES = 256 * 1024

Rows = list[list[JsonValue]]


@dataclass(slots=True)
class Timings:
    """Where a query's time went, for `Server-Timing`."""

    wait_s: float = 0.0
    fetch_s: float = 0.0
    convert_s: float = 0.0


def decode_chunk(result_format: str, data: bytes, converter: RowConverter) -> Rows:
    """One downloaded chunk -> normalized rows."""
    if result_format == "JSON_ARRAY":
        try:
            cells = orjson.loads(data) if data.strip() else []
        except orjson.JSONDecodeError:
            raise ProtocolError("a result chunk is not valid JSON") from None
        if not isinstance(cells, list):
            raise ProtocolError("a JSON_ARRAY result chunk is not an array of rows")
        return converter.convert_rows(cells)
    if result_format == "ARROW_STREAM":
        pa = _pyarrow()
        try:
            reader = pa.ipc.open_stream(pa.py_buffer(data))
            batches = list(reader)
        except pa.ArrowInvalid:
            raise ProtocolError("a result chunk is not a valid Arrow stream") from None
        rows: Rows = []
        for batch in batches:
            rows.extend(converter.convert_arrow(batch))
        return rows
    raise ProtocolError(f"result format {result_format} is not supported")


@functools.cache
def _pyarrow() -> Any:  # pyarrow ships no type information
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
    return len(chunk.data_array or [])


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

    # -- in order -------------------------------------------------------------------------

    async def chunks(self) -> AsyncGenerator[tuple[int, Rows], None]:
        """(row_offset, rows) for every chunk, in chunk order; stops its downloads on exit."""
        linked = self.first_chunk.external_links is not None
        source = self._linked_chunks() if linked else self._inline_chunks()
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

    async def _inline_chunks(self) -> AsyncGenerator[tuple[int, Rows], None]:
        chunk: ResultData | None = self.first_chunk
        while chunk is not None:
            yield chunk.row_offset, await self._inline_rows(chunk.data_array or [])
            chunk = await self._next(chunk)

    async def _linked_chunks(self) -> AsyncGenerator[tuple[int, Rows], None]:
        count = self.manifest.total_chunk_count
        pending: collections.deque[asyncio.Task[tuple[int, Rows]]] = collections.deque()
        next_index = 0
        try:
            while pending or next_index < count:
                while len(pending) < self.window and next_index < count:
                    pending.append(asyncio.ensure_future(self._linked_chunk(next_index)))
                    next_index += 1
                yield await pending.popleft()
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _linked_chunk(self, index: int) -> tuple[int, Rows]:
        chunk = await self._chunk(index)
        links = chunk.external_links or ()
        if not links:
            raise ProtocolError(
                f"chunk {index} came without a link", statement_id=self.statement_id
            )
        return links[0].row_offset, await self._linked_rows(links)

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
            return (await self._linked_rows(chunk.external_links))[lo:hi]
        return await self._inline_rows((chunk.data_array or [])[lo:hi])

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

    async def _next(self, chunk: ResultData) -> ResultData | None:
        """The chunk after `chunk`, by its internal link (kept verbatim) or its index."""
        index, link = chunk.next_pointer()
        if link:
            return await self.client.follow_chunk_link(
                self.statement_id, link, deadline=self.deadline, stats=self.stats
            )
        if index is not None:
            return await self.client.get_chunk(
                self.statement_id, index, deadline=self.deadline, stats=self.stats
            )
        return None

    async def _linked_rows(self, links: Sequence[ExternalLink]) -> Rows:
        rows: Rows = []
        for link in links:
            data = await self._download(link)
            decode = partial(decode_chunk, self.manifest.format, data, self.converter)
            decoded = await self._convert(decode, rows=link.row_count, nbytes=len(data))
            if link.row_count and len(decoded) != link.row_count:
                raise ProtocolError(
                    f"chunk {link.chunk_index} has {len(decoded)} rows, its link says "
                    f"{link.row_count}",
                    statement_id=self.statement_id,
                )
            rows.extend(decoded)
        return rows

    async def _inline_rows(self, cells: list[Any]) -> Rows:
        convert = partial(self.converter.convert_rows, cells, check_cells=True)
        return await self._convert(convert, rows=len(cells), nbytes=0)

    async def _convert(self, work: Callable[[], Rows], *, rows: int, nbytes: int) -> Rows:
        """Run `work`, in a thread when the chunk is large enough to stall other requests."""
        started = self.clock()
        if rows >= THREAD_CONVERT_ROWS or nbytes >= THREAD_DECODE_BYTES:
            converted = await asyncio.to_thread(work)
        else:
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
