"""A buffered JSON answer, encoded while its chunks arrive.

Each batch of rows is encoded and appended as soon as the reader hands it over, and its
Python objects are dropped before the next chunk is converted: an answer costs about the
size of its body, never the Python form of all its rows (about six times the JSON).

The body is, byte for byte, what encoding the whole result at once gives:

    {"columns": [...], "rows": [[...], ...], "row_count": N, "truncated": B, "statement_id": "..."}

and its ETag is taken over the same object without `statement_id`, so a fresh run with the
same rows keeps the ETag and a client's copy stays valid.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from dbx_backend.engine.cache_store import etag_of_digest
from dbx_backend.engine.memory import Reservation
from dbx_backend.engine.normalize import Column, JsonValue, RowConverter
from dbx_backend.engine.reader import Timings
from dbx_backend.warehouse.client import CallStats

if TYPE_CHECKING:
    import pyarrow

# Rows converted and encoded at a time: their Python objects (about six times their JSON)
# never outnumber this, whatever the size of the warehouse's chunks.
SLICE_ROWS = 2048


class EncodedRows(NamedTuple):
    """Rows encoded as JSON arrays joined by commas (no brackets), and how many."""

    data: bytes
    rows: int


class EncodedJsonRows:
    """The buffered answer's chunk form: rows normalized and encoded at once, a slice at a
    time, so a chunk's Python objects live only while it is decoded and what waits in the
    download window is JSON text."""

    def __init__(self, converter: RowConverter, *, slice_rows: int = SLICE_ROWS) -> None:
        self.converter = converter
        self.slice_rows = max(1, slice_rows)

    def from_cells(
        self, cells: list[Any], *, check_cells: bool = False, first_row: int = 0
    ) -> EncodedRows:
        """JSON_ARRAY rows, normalized and encoded. The list is consumed: each slice of cells
        is dropped once converted (the chunk's own copy is gone by then)."""
        convert = self.converter.convert_rows
        if not _well_formed(cells, len(self.converter.columns)):
            # Names the bad row by its place.
            convert(cells, check_cells=check_cells, first_row=first_row)
        out = _Joined()
        for start in range(0, len(cells), self.slice_rows):
            stop = min(start + self.slice_rows, len(cells))
            out.add(orjson.dumps(convert(cells[start:stop], check_cells=check_cells)))
            cells[start:stop] = itertools.repeat(None, stop - start)
        return out.value(len(cells))

    def from_arrow(self, batch: pyarrow.RecordBatch) -> EncodedRows:
        """An Arrow batch's rows, normalized and encoded."""
        if not batch.num_rows:
            self.converter.convert_arrow(batch)  # an empty batch's schema is checked too
        out = _Joined()
        for start in range(0, batch.num_rows, self.slice_rows):
            out.add(orjson.dumps(self.converter.convert_arrow(batch.slice(start, self.slice_rows))))
        return out.value(batch.num_rows)

    def count(self, part: EncodedRows) -> int:
        """Rows in `part`."""
        return part.rows

    def join(self, parts: list[EncodedRows]) -> EncodedRows:
        """Several parts as one, in order."""
        if len(parts) == 1:
            return parts[0]
        return EncodedRows(b",".join(p.data for p in parts if p.rows), sum(p.rows for p in parts))


def _well_formed(cells: list[Any], width: int) -> bool:
    """Every row an array of the schema's width: then no slice can fail on a row's shape,
    the only failure named by the row's number."""
    return _ROW_TYPES.issuperset(map(type, cells)) and set(map(len, cells)) <= {width}


_ROW_TYPES = frozenset({list, tuple})


class _Joined:
    """Encoded slices (each a JSON array) as one part: their rows without the brackets,
    written as they come, so no slice outlives the next."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()

    def add(self, array: bytes) -> None:
        if len(array) > 2:
            if self._buffer.tell():
                self._buffer.write(b",")
            self._buffer.write(memoryview(array)[1:-1])

    def value(self, rows: int) -> EncodedRows:
        return EncodedRows(self._buffer.getvalue(), rows)


class JsonAnswerWriter:
    """Appends encoded rows to one growing body; the caps on rows and bytes truncate it."""

    def __init__(
        self, columns: Sequence[Column], *, max_rows: int | None, max_bytes: int | None
    ) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.row_count = 0
        self.truncated = False
        self.cut_at_bytes = False  # the byte cap (the whole memory budget) cut it
        # BytesIO grows in place and hands its buffer over without a copy (`getvalue`).
        self._body = io.BytesIO()
        self._digest = hashlib.sha256()
        head = orjson.dumps({"columns": [c.to_json() for c in columns]})
        self._write(memoryview(head)[:-1])
        self._write(b',"rows":[')

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._body.tell()

    @property
    def full(self) -> bool:
        """True once a cap cut the answer: later rows are not wanted."""
        return self.truncated

    def size_with(self, part: EncodedRows) -> int:
        """The body's size once `part` is appended."""
        return self.size + len(part.data) + 1

    def append(self, part: EncodedRows) -> None:
        """Add encoded rows; past the row or byte cap only those that fit are kept, and the
        answer is `truncated`."""
        if not part.rows:
            return
        separator = 1 if self.row_count else 0
        over_rows = self.max_rows is not None and self.row_count + part.rows > self.max_rows
        over_bytes = (
            self.max_bytes is not None and self.size + separator + len(part.data) > self.max_bytes
        )
        if over_rows or over_bytes:
            self._append_what_fits(orjson.loads(b"[" + part.data + b"]"))
            return
        if separator:
            self._write(b",")
        self._write(part.data)
        self.row_count += part.rows

    def finish(self, statement_id: str, *, truncated: bool = False) -> tuple[bytes, str]:
        """The body and its ETag; the writer is spent."""
        self.truncated = self.truncated or truncated
        tail = b'],"row_count":' + orjson.dumps(self.row_count)
        tail += b',"truncated":' + orjson.dumps(self.truncated)
        self._write(tail)
        self._digest.update(b"}")
        self._body.write(b',"statement_id":' + orjson.dumps(statement_id) + b"}")
        body = self._body.getvalue()
        self._body = io.BytesIO()
        return body, etag_of_digest(self._digest.digest())

    def _append_what_fits(self, rows: list[list[JsonValue]]) -> None:
        """Row by row up to the caps (once per answer at most: it is full afterwards)."""
        self.truncated = True
        for row in rows:
            if self.max_rows is not None and self.row_count >= self.max_rows:
                return
            encoded = (b"," if self.row_count else b"") + orjson.dumps(row)
            if self.max_bytes is not None and self.size + len(encoded) > self.max_bytes:
                self.cut_at_bytes = True
                return
            self._write(encoded)
            self.row_count += 1

    def _write(self, data: bytes | memoryview) -> None:
        self._body.write(data)
        self._digest.update(data)


@dataclass(slots=True, weakref_slot=True)
class JsonAnswer:
    """A statement's whole result as the encoded JSON answer, with where its time went; it
    holds its memory reservation until `release` (once its body is sent)."""

    statement_id: str
    body: bytes
    etag: str
    row_count: int
    truncated: bool
    timings: Timings
    stats: CallStats
    reservation: Reservation
    memory_wait_s: float = 0.0

    def release(self) -> None:
        """The body was sent (or will not be): its bytes leave the memory budget."""
        self.reservation.release()
