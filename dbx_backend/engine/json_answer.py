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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from dbx_backend.engine.cache_store import etag_of_digest
from dbx_backend.engine.memory import Reservation
from dbx_backend.engine.normalize import Column, JsonValue
from dbx_backend.engine.reader import Timings
from dbx_backend.warehouse.client import CallStats

Rows = Sequence[Sequence[JsonValue]]


class EncodedRows(NamedTuple):
    """One batch of rows as a JSON array, and how many rows it holds."""

    data: bytes
    rows: int


class JsonAnswerWriter:
    """Appends encoded rows to one growing body; the cap on rows and bytes truncates it."""

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

    def encode(self, rows: Rows) -> EncodedRows:
        """The rows of one batch as JSON, cut to the row cap: what `append` takes next.
        Safe to run in a thread (it reads only the caps and the count)."""
        if self.max_rows is not None and self.row_count + len(rows) > self.max_rows:
            rows = rows[: max(0, self.max_rows - self.row_count)]
            self.truncated = True
        return EncodedRows(orjson.dumps(rows), len(rows))

    def room_for(self, encoded: EncodedRows) -> int:
        """The body's size once `encoded` is appended."""
        return self.size + len(encoded.data) - 1

    def append(self, encoded: EncodedRows) -> None:
        """Add a batch `encode` gave; past the byte cap, only the rows that fit are kept."""
        if not encoded.rows:
            return
        inner = memoryview(encoded.data)[1:-1]  # the rows without the batch's own brackets
        separator = 1 if self.row_count else 0
        if self.max_bytes is not None and self.size + separator + len(inner) > self.max_bytes:
            self._append_what_fits(orjson.loads(encoded.data), self.max_bytes)
            return
        if separator:
            self._write(b",")
        self._write(inner)
        self.row_count += encoded.rows

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

    def _append_what_fits(self, rows: list[list[JsonValue]], max_bytes: int) -> None:
        self.truncated = self.cut_at_bytes = True
        for row in rows:
            encoded = orjson.dumps(row)
            separator = b"," if self.row_count else b""
            if self.size + len(separator) + len(encoded) > max_bytes:
                return
            self._write(separator + encoded)
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
