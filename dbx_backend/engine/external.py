"""Reading an EXTERNAL_LINKS result: chunks downloaded concurrently, handed on in order.

Each chunk's presigned link comes from the statement (chunk 0) or the chunk endpoint; links are
downloaded without our credential (reference §9), refreshed when they expire or are about to,
and decoded from JSON_ARRAY or ARROW_STREAM. At most `window` chunks are in memory or in flight.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson

from dbx_backend.engine.normalize import JsonValue, RowConverter
from dbx_backend.warehouse.client import WarehouseClient
from dbx_backend.warehouse.errors import LinkExpired, ProtocolError
from dbx_backend.warehouse.retry import Deadline
from dbx_backend.warehouse.wire import ExternalLink, ResultData, ResultManifest

# Refresh a link this close to its expiration instead of racing it.
EXPIRY_MARGIN = timedelta(seconds=15)
# Decoding a chunk this large stalls other requests: do it in a thread.
THREAD_DECODE_BYTES = 256 * 1024

Rows = list[list[JsonValue]]


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


class ExternalChunkReader:
    """Downloads one statement's chunks with a bounded window, yielding them in order."""

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
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.statement_id = statement_id
        self.manifest = manifest
        self.first_chunk = first_chunk
        self.converter = converter
        self.deadline = deadline
        self.window = max(1, window)
        self.now = now
        self.refreshes = 0

    async def chunks(self) -> AsyncGenerator[tuple[int, Rows], None]:
        """(row_offset, rows) for every chunk, in chunk order; cancels downloads on exit."""
        count = self.manifest.total_chunk_count
        pending: collections.deque[asyncio.Task[tuple[int, Rows]]] = collections.deque()
        next_index = 0
        try:
            while pending or next_index < count:
                while len(pending) < self.window and next_index < count:
                    pending.append(asyncio.ensure_future(self._read(next_index)))
                    next_index += 1
                yield await pending.popleft()
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _links(self, index: int) -> tuple[ExternalLink, ...]:
        if index == 0 and self.first_chunk.external_links:
            return self.first_chunk.external_links
        chunk = await self.client.get_chunk(self.statement_id, index, deadline=self.deadline)
        return chunk.external_links or ()

    async def _refreshed(self, link: ExternalLink) -> ExternalLink:
        """A fresh link for the same chunk, from the chunk endpoint (each call mints a new URL)."""
        self.refreshes += 1
        chunk = await self.client.get_chunk(
            self.statement_id, link.chunk_index, deadline=self.deadline
        )
        for fresh in chunk.external_links or ():
            if fresh.row_offset == link.row_offset:
                return fresh
        raise ProtocolError(
            f"the chunk endpoint gave no link for chunk {link.chunk_index}",
            statement_id=self.statement_id,
        )

    async def _download(self, link: ExternalLink) -> bytes:
        if _expiring(link, self.now()):
            link = await self._refreshed(link)
        try:
            return await self.client.download(link, deadline=self.deadline)
        except LinkExpired:
            return await self.client.download(await self._refreshed(link), deadline=self.deadline)

    async def _read(self, index: int) -> tuple[int, Rows]:
        links = await self._links(index)
        if not links:
            raise ProtocolError(
                f"chunk {index} came without a link", statement_id=self.statement_id
            )
        rows: Rows = []
        for link in links:
            data = await self._download(link)
            decode = partial(decode_chunk, self.manifest.format, data, self.converter)
            decoded = await _run(decode, threaded=len(data) >= THREAD_DECODE_BYTES)
            if link.row_count and len(decoded) != link.row_count:
                raise ProtocolError(
                    f"chunk {link.chunk_index} has {len(decoded)} rows, its link says "
                    f"{link.row_count}",
                    statement_id=self.statement_id,
                )
            rows.extend(decoded)
        return links[0].row_offset, rows


async def _run(work: Callable[[], Rows], *, threaded: bool) -> Rows:
    if threaded:
        return await asyncio.to_thread(work)
    return work()
