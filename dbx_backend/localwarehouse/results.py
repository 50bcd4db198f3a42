"""Results cut into chunks as they are produced, and kept on disk until they expire.

The producer reads DuckDB's output as Arrow record batches, encodes rows in the requested
format and closes a chunk when it reaches `chunk_rows` or `chunk_bytes`; each finished chunk
goes to the statement's spool file, so memory holds about one chunk whatever the result size.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa

from dbx_backend.localwarehouse.errors import SqlError

BATCH_ROWS = 8192


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """Where one chunk sits in the result and in the spool file."""

    chunk_index: int
    row_offset: int
    row_count: int
    byte_count: int
    file_offset: int


@dataclass(frozen=True, slots=True)
class Limits:
    """How a result is cut: chunk size, the caller's limits and the INLINE cap."""

    chunk_rows: int
    chunk_bytes: int
    row_limit: int | None = None
    byte_limit: int | None = None
    inline_limit_bytes: int | None = None


class ResultSpool:
    """The encoded chunks of one result in an anonymous temporary file."""

    def __init__(self, directory: Path | None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - owned by close()
        self._lock = threading.Lock()
        self.chunks: list[ChunkInfo] = []
        self.total_row_count = 0
        self.total_byte_count = 0
        self.truncated = False

    def append(self, row_count: int, data: bytes) -> None:
        """Store the next chunk."""
        self.chunks.append(
            ChunkInfo(
                len(self.chunks), self.total_row_count, row_count, len(data), self.total_byte_count
            )
        )
        self._file.write(data)
        self.total_row_count += row_count
        self.total_byte_count += len(data)

    def read(self, chunk_index: int) -> bytes:
        """The encoded bytes of one chunk (safe from several threads at once)."""
        chunk = self.chunks[chunk_index]
        with self._lock:
            if not self._file.closed:
                self._file.flush()
        return os.pread(self._file.fileno(), chunk.byte_count, chunk.file_offset)

    def close(self) -> None:
        """Free the file."""
        with self._lock:
            self._file.close()


class _Encoder(Protocol):
    def add(self, batch: pa.RecordBatch) -> Iterator[tuple[int, bytes]]: ...
    def finish(self) -> Iterator[tuple[int, bytes]]: ...

    stopped: bool
    truncated: bool


class _BudgetMixin:
    """Row and byte budgets shared by the encoders: stop at the first row that exceeds one."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.rows_left = limits.row_limit if limits.row_limit is not None else -1
        self.bytes_left = limits.byte_limit if limits.byte_limit is not None else -1
        self.total_bytes = 0
        self.stopped = False
        self.truncated = False

    def admit(self, size: int) -> bool:
        """One row of `size` bytes: whether it was admitted."""
        return self.admit_many(1, size) == 1

    def admit_many(self, count: int, size: int) -> int:
        """`count` rows of `size` bytes each at once: how many were admitted."""
        fits = count
        if self.rows_left >= 0:
            fits = min(fits, self.rows_left)
        if self.bytes_left >= 0 and size:
            fits = min(fits, self.bytes_left // size)
        if fits < count:
            self.stopped = self.truncated = True
        if self.rows_left >= 0:
            self.rows_left -= fits
        if self.bytes_left >= 0:
            self.bytes_left -= fits * size
        self.total_bytes += fits * size
        self._check_inline_cap()
        return fits

    def _check_inline_cap(self) -> None:
        cap = self.limits.inline_limit_bytes
        if cap is not None and self.total_bytes > cap:
            raise SqlError(
                "INLINE_RESULT_TOO_LARGE",
                f"The result is larger than the {cap} bytes allowed with disposition INLINE. "
                "Use disposition EXTERNAL_LINKS for large results.",
                "54000",
            )


class _RowEncoder(_BudgetMixin):
    """JSON_ARRAY and CSV: rows are encoded one by one from string columns."""

    def __init__(
        self,
        limits: Limits,
        encode_row: Callable[[Sequence[str | None]], bytes],
        frame: Callable[[int, list[bytes]], bytes],
    ) -> None:
        super().__init__(limits)
        self._encode_row = encode_row
        self._frame = frame
        self._rows: list[bytes] = []
        self._bytes = 0
        self._chunks = 0

    def add(self, batch: pa.RecordBatch) -> Iterator[tuple[int, bytes]]:
        columns = [column.to_pylist() for column in batch.columns]
        rows: Iterable[Sequence[Any]] = zip(*columns, strict=True) if columns else ()
        for row in rows:
            encoded = self._encode_row(row)
            if not self.admit(len(encoded)):
                return
            if self._rows and (
                len(self._rows) >= self.limits.chunk_rows
                or self._bytes + len(encoded) > self.limits.chunk_bytes
            ):
                yield self._flush()
            self._rows.append(encoded)
            self._bytes += len(encoded) + 1

    def finish(self) -> Iterator[tuple[int, bytes]]:
        if self._rows or self._chunks == 0:
            yield self._flush()

    def _flush(self) -> tuple[int, bytes]:
        chunk = (len(self._rows), self._frame(self._chunks, self._rows))
        self._chunks += 1
        self._rows, self._bytes = [], 0
        return chunk


class _ArrowEncoder(_BudgetMixin):
    """ARROW_STREAM: typed batches sliced into chunks, each an Arrow IPC stream."""

    def __init__(self, limits: Limits, schema: pa.Schema) -> None:
        super().__init__(limits)
        self._schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self._bytes = 0
        self._chunks = 0

    def add(self, batch: pa.RecordBatch) -> Iterator[tuple[int, bytes]]:
        row_bytes = max(1, batch.nbytes // max(1, batch.num_rows))
        start = 0
        while start < batch.num_rows and not self.stopped:
            room_rows = self.limits.chunk_rows - self._rows
            room_bytes = max(1, (self.limits.chunk_bytes - self._bytes) // row_bytes)
            take = min(batch.num_rows - start, room_rows, room_bytes)
            admitted = self.admit_many(take, row_bytes)
            if admitted:
                self._pending.append(batch.slice(start, admitted))
                self._rows += admitted
                self._bytes += admitted * row_bytes
                start += admitted
            if self._rows >= self.limits.chunk_rows or self._bytes + row_bytes > (
                self.limits.chunk_bytes
            ):
                yield self._flush()

    def finish(self) -> Iterator[tuple[int, bytes]]:
        if self._pending or self._chunks == 0:
            yield self._flush()

    def _flush(self) -> tuple[int, bytes]:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self._schema) as writer:
            for batch in self._pending:
                writer.write_batch(batch)
        chunk = (self._rows, sink.getvalue().to_pybytes())
        self._chunks += 1
        self._pending, self._rows, self._bytes = [], 0, 0
        return chunk


def _json_row(row: Sequence[str | None]) -> bytes:
    # orjson's output keeps a ~4 KiB allocation however small it is; copying to an exact-size
    # object keeps a chunk of 100k pending rows at a few MiB instead of hundreds.
    return bytes(memoryview(orjson.dumps(row)))


def json_encoder(limits: Limits) -> _RowEncoder:
    """Rows as JSON arrays of strings; a chunk is the compact JSON array of its rows."""
    return _RowEncoder(limits, _json_row, lambda _index, rows: b"[" + b",".join(rows) + b"]")


def csv_encoder(limits: Limits, names: Sequence[str]) -> _RowEncoder:
    """RFC 4180 rows, NULL as `null`, header only in chunk 0 (reference §3.2)."""
    header = _csv_line(names)

    def frame(index: int, rows: list[bytes]) -> bytes:
        return (header if index == 0 else b"") + b"".join(rows)

    return _RowEncoder(
        limits, lambda row: _csv_line(["null" if v is None else v for v in row]), frame
    )


def arrow_encoder(limits: Limits, schema: pa.Schema) -> _ArrowEncoder:
    """Arrow IPC stream chunks of the typed result."""
    return _ArrowEncoder(limits, schema)


def _csv_line(values: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue().encode()


def spool_result(
    batches: Iterable[pa.RecordBatch],
    encoder: _Encoder,
    spool: ResultSpool,
    check_canceled: Callable[[], None],
) -> None:
    """Encode `batches` into chunks in `spool` until the result or a limit ends."""
    for batch in batches:
        check_canceled()
        for row_count, data in encoder.add(batch):
            spool.append(row_count, data)
        if encoder.stopped:
            break
    for row_count, data in encoder.finish():
        spool.append(row_count, data)
    spool.truncated = encoder.truncated
