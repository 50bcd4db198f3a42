"""JSON_ARRAY rows kept as the warehouse sent them and parsed a slice at a time.

A JSON_ARRAY chunk (reference §7.2) is an array of rows, each an array of strings and nulls.
Parsed at once, its Python objects weigh about five times its text, held until the whole chunk
is converted; and the memory they took stays with the process. `RowArray` keeps the text and
parses about `SLICE_BYTES` of it at a time, so a chunk costs its text plus one slice's objects,
whatever the warehouse's chunk size.

A slice ends at a row boundary (`],[` outside any string): each string holds an even number of
unescaped quotes, so a boundary is outside strings when the quotes before it are even. A cut
that is not a row boundary (the text breaks the protocol) leaves a slice that is not valid
JSON: it fails as the whole chunk would have.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from dbx_backend.warehouse.errors import ProtocolError

# Text parsed at once: its Python objects (about five times as much) are what a chunk holds.
SLICE_BYTES = 64 * 1024

# Whitespace as JSON has it (RFC 8259 §2): a regular expression's `\s` also takes \v and \f,
# and a cut there would drop them: a chunk that is not valid JSON whole would parse.
_WS = rb"[ \t\r\n]*"
_ROW_BOUNDARY = re.compile(rb"\]" + _WS + rb"," + _WS + rb"\[")
_ESCAPED = re.compile(rb"\\.", re.DOTALL)
# In a statement or chunk response: where the rows start, and candidates for where they end
# (the last row's `]`, the array's `]`, then what follows a value in an object).
_DATA_ARRAY = re.compile(rb'"data_array"' + _WS + rb":" + _WS + rb"\[")
_ROWS_END = re.compile(rb"\]" + _WS + rb"\]" + _WS + rb"[,}]")
_EMPTY_ROWS = re.compile(rb"\[" + _WS + rb"\]")
_SPACE = b" \t\r\n"
_NOT_SPACE = re.compile(rb"[^ \t\r\n]")


def _unescaped_quotes(data: bytes, start: int, end: int) -> int:
    """The quotes in `data[start:end]` that open or close a string (none escaped)."""
    if data.find(b"\\", start, end) < 0:
        return data.count(b'"', start, end)
    return _ESCAPED.sub(b"", data[start:end]).count(b'"')


def _blank(data: bytes, start: int, end: int) -> bool:
    return _NOT_SPACE.search(data, start, end) is None


class RowArray:
    """A chunk's rows: their JSON text, parsed a slice at a time (or rows already parsed)."""

    __slots__ = ("_data", "_end", "_rows", "_start")

    def __init__(
        self, data: bytes = b"", start: int = 0, end: int = 0, *, rows: list[Any] | None = None
    ) -> None:
        # The text is `data[start:end]`, brackets included; `rows` when already parsed.
        self._data, self._start, self._end = data, start, end
        self._rows = rows

    @classmethod
    def of_rows(cls, rows: list[Any]) -> RowArray:
        """Rows already parsed (a chunk parsed with its envelope, tests)."""
        return cls(rows=rows)

    @classmethod
    def of_text(cls, data: bytes) -> RowArray:
        """The JSON text of an array of rows; an empty body is no rows."""
        first = _NOT_SPACE.search(data)
        if first is None:
            return cls(rows=[])
        start, end = first.start(), len(data)
        while data[end - 1] in _SPACE:
            end -= 1
        if data[start] != ord("[") or data[end - 1] != ord("]") or end - start < 2:
            raise ProtocolError("a JSON_ARRAY result chunk is not an array of rows")
        return cls(data, start, end)

    def __repr__(self) -> str:
        return f"RowArray(nbytes={self.nbytes}, parsed_rows={self.parsed_rows})"

    @property
    def nbytes(self) -> int:
        """The length of the rows' text (0 when they came parsed)."""
        return self._end - self._start if self._rows is None else 0

    @property
    def parsed_rows(self) -> int:
        """How many rows came parsed (0 when they are text)."""
        return len(self._rows) if self._rows is not None else 0

    def __bool__(self) -> bool:
        if self._rows is not None:
            return bool(self._rows)
        return not _blank(self._data, self._start + 1, self._end - 1)

    def slices(self, max_bytes: int = SLICE_BYTES) -> Iterator[tuple[int, list[Any]]]:
        """(first row's number, rows) of about `max_bytes` of text each, in order."""
        if self._rows is not None:
            step = max(1, max_bytes // 128)  # about a row per 128 bytes of text
            for start in range(0, len(self._rows), step):
                yield start, self._rows[start : start + step]
            return
        first = 0
        view = memoryview(self._data)
        for start, end in self._pieces(max(1, max_bytes)):
            try:
                rows = orjson.loads(b"".join((b"[", view[start:end], b"]")))
            except orjson.JSONDecodeError:
                raise ProtocolError("a result chunk is not valid JSON") from None
            yield first, rows
            first += len(rows)
            del rows

    def take(self, start: int, end: int) -> list[Any]:
        """Rows `[start, end)` (numbered from the chunk's first), parsing no more than needed."""
        taken: list[Any] = []
        for first, rows in self.slices():
            if first >= end:
                break
            if first + len(rows) > start:
                taken += rows[max(0, start - first) : max(0, end - first)]
        return taken

    def count(self) -> int:
        """How many rows (parses the text when there is one)."""
        if self._rows is not None:
            return len(self._rows)
        return sum(len(rows) for _, rows in self.slices())

    def _pieces(self, max_bytes: int) -> Iterator[tuple[int, int]]:
        """Spans of the rows' text between the outer brackets, cut at row boundaries about
        every `max_bytes`."""
        data = self._data
        pos, end = self._start + 1, self._end - 1
        if _blank(data, pos, end):
            return
        while pos < end:
            boundary = self._boundary(pos, pos + max_bytes, end)
            if boundary is None:
                yield pos, end
                return
            yield pos, boundary.start() + 1  # through the row's closing bracket
            pos = boundary.end() - 1  # from the next row's opening bracket

    def _boundary(self, pos: int, target: int, end: int) -> re.Match[bytes] | None:
        """The first row boundary at or after `target` that lies outside strings, or None
        when the rows end first."""
        data = self._data
        quotes, counted, search = 0, pos, target
        while search < end:
            found = _ROW_BOUNDARY.search(data, search, end)
            if found is None:
                return None
            quotes += _unescaped_quotes(data, counted, found.start())
            counted = found.start()
            if quotes % 2 == 0:
                return found
            search = found.start() + 1
        return None


def split_rows(payload: bytes) -> tuple[bytes, RowArray] | None:
    """A statement or chunk response without its `data_array`'s text (replaced by null) and
    the rows as a `RowArray` over that text; None when the rows cannot be told apart from the
    rest (the caller then parses the whole body)."""
    found = _DATA_ARRAY.search(payload)
    if found is None:
        return None
    start = found.end() - 1
    empty = _EMPTY_ROWS.match(payload, start)
    if empty is not None:
        stop = empty.end()
    else:
        quotes, counted = 0, start
        for candidate in _ROWS_END.finditer(payload, start):
            quotes += _unescaped_quotes(payload, counted, candidate.start())
            counted = candidate.start()
            if quotes % 2 == 0:
                stop = payload.index(b"]", candidate.start() + 1) + 1
                break
        else:
            return None
    envelope = payload[:start] + b"null" + payload[stop:]
    return envelope, RowArray(payload, start, stop)


def place_rows(data: Any, rows: RowArray) -> bool:
    """Put `rows` back where `split_rows` took them out of a parsed response: the chunk's own
    `data_array`, or its statement's `result.data_array`. False when neither was there."""
    if not isinstance(data, dict):
        return False
    holder = data if "data_array" in data else data.get("result")
    if not isinstance(holder, dict) or holder.get("data_array", False) is not None:
        return False
    holder["data_array"] = rows
    return True
