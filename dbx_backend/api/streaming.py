"""Streamed query results: NDJSON, CSV and Arrow written chunk by chunk, with back-pressure.

Each writer names the engine form it reads the result in (`form`), frames a header, each
chunk's part and a footer. Arrow (`arrow_stream.py`) is imported on first use: pyarrow stays
out of a process that never sends it.

NDJSON: a first line `{"columns": [...], "statement_id": ..., "total_row_count": ...,
"chunk_count": ...}` (the sizes when the warehouse said them), one JSON array per row, then
`{"row_count": N, "truncated": bool, "server_timing": ...}`; an error after the first byte ends
the stream with one `{"error": {...}}` line instead. CSV (RFC 4180): a header row, then rows;
an error after the first byte cuts the response short (the chunked body never ends), so no
client mistakes a partial file for a whole one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, TypeVar

import orjson

from dbx_backend.engine import (
    ChunkForm,
    Column,
    JsonLines,
    JsonRows,
    JsonValue,
    Lines,
    OpenStatement,
    encode_rows,
)

ResultFormat = Literal["json", "ndjson", "csv", "arrow"]
NDJSON = "application/x-ndjson"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
# What most callers send (or nothing): JSON without looking further.
PLAIN_JSON = frozenset({"", "*/*", "application/json"})
Part = TypeVar("Part")
Rows = Sequence[Sequence[JsonValue]]


def negotiate(accept: str) -> ResultFormat:
    """The response format for an `Accept` header: NDJSON, CSV or Arrow when asked, JSON
    otherwise."""
    if accept in PLAIN_JSON:
        return "json"
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in (NDJSON, "application/ndjson", "application/jsonl"):
            return "ndjson"
        if media == CSV:
            return "csv"
        if media == ARROW:
            return "arrow"
        if media in ("application/json", "*/*", "application/*"):
            return "json"
    return "json"


class StreamWriter(Protocol[Part]):
    """Frames a streamed result: a header, each chunk's part in the writer's form, a footer."""

    content_type: str
    media_type: str  # the Content-Type header

    @property
    def form(self) -> ChunkForm[Part]:
        """The form the engine decodes each chunk into for this writer."""
        ...

    def header(
        self,
        columns: Sequence[Column],
        statement_id: str,
        *,
        total_row_count: int | None = None,
        chunk_count: int | None = None,
    ) -> bytes:
        """What comes before the first row (with the result's size when the warehouse said it)."""
        ...

    def part(self, part: Part) -> Iterable[bytes | memoryview]:
        """One chunk's rows, encoded (several pieces, written in order)."""
        ...

    def footer(self, row_count: int, truncated: bool, server_timing: str = "") -> bytes:
        """What ends a complete result (with where the time went, when the form has room)."""
        ...

    # A failure after the first byte: whether the body is then cut (the chunked response
    # never ends) rather than ended, and what is written before that.
    cut_on_failure: bool

    def failure(self, body: dict[str, JsonValue]) -> bytes:
        """The last bytes of a result that failed mid-way (`body`: the error envelope)."""
        ...


def stream_writer(result_format: ResultFormat, statement: OpenStatement) -> StreamWriter[Any]:
    """The writer of `result_format` for `statement`'s result."""
    if result_format == "arrow":
        from dbx_backend.api.arrow_stream import ArrowStreamWriter  # pyarrow on first use

        return ArrowStreamWriter.for_statement(statement)
    if result_format == "ndjson":
        return NdjsonWriter(statement.json_lines())
    return CsvWriter(statement.json_rows())


class NdjsonWriter:
    """Encodes a result as newline-delimited JSON."""

    content_type = NDJSON
    media_type = f"{NDJSON}; charset=utf-8"
    cut_on_failure = False

    def __init__(self, form: JsonLines | None = None) -> None:
        self._form = form

    @property
    def form(self) -> JsonLines:
        """NDJSON lines, written by the engine (whole columns at once for large chunks)."""
        if self._form is None:
            raise RuntimeError("this writer was made without a statement")
        return self._form

    def part(self, part: Lines) -> Iterable[bytes | memoryview]:
        """One chunk's lines, in their pieces."""
        return part.pieces

    def header(
        self,
        columns: Sequence[Column],
        statement_id: str,
        *,
        total_row_count: int | None = None,
        chunk_count: int | None = None,
    ) -> bytes:
        """The first line: the schema, the statement id and the size, for a progress bar."""
        line: dict[str, JsonValue] = {
            "columns": [c.to_json() for c in columns],
            "statement_id": statement_id,
        }
        if total_row_count is not None:
            line["total_row_count"] = total_row_count
        if chunk_count is not None:
            line["chunk_count"] = chunk_count
        return orjson.dumps(line) + b"\n"

    def rows(self, rows: Sequence[Sequence[JsonValue]]) -> bytes:
        """One line per row."""
        return encode_rows(rows)

    def footer(self, row_count: int, truncated: bool, server_timing: str = "") -> bytes:
        """The last line of a complete result, with where the time went."""
        line = {"row_count": row_count, "truncated": truncated, "server_timing": server_timing}
        return orjson.dumps(line) + b"\n"

    def failure(self, body: dict[str, JsonValue]) -> bytes:
        """The last line of a result that failed mid-way."""
        return orjson.dumps(body) + b"\n"


def _csv_bool(value: JsonValue) -> JsonValue:
    return value if value is None else ("true" if value else "false")


def _csv_json(value: JsonValue) -> JsonValue:
    return value if value is None else orjson.dumps(value).decode()


# The csv module writes None as an empty field and numbers and strings as themselves; only
# booleans and nested values (by the JSON shape of their column) need a text form of their own.
_CSV_CELLS: dict[str, Callable[[JsonValue], JsonValue]] = {
    "boolean": _csv_bool,
    "array": _csv_json,
    "object": _csv_json,
    "any": _csv_json,
}


class CsvWriter:
    """Encodes a result as RFC 4180 CSV: NULL is an empty field, nested values JSON text."""

    content_type = CSV
    media_type = f"{CSV}; charset=utf-8"
    cut_on_failure = True

    def __init__(self, form: JsonRows | None = None) -> None:
        self._form = form
        self._cells: list[tuple[int, Callable[[JsonValue], JsonValue]]] = []

    @property
    def form(self) -> JsonRows:
        """Normalized JSON rows."""
        if self._form is None:
            raise RuntimeError("this writer was made without a statement")
        return self._form

    def part(self, part: Rows) -> Iterable[bytes]:
        """One chunk's records."""
        return (self.rows(part),)

    def _encode(self, rows: Iterable[Sequence[JsonValue]]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows(rows)
        return buffer.getvalue().encode()

    def header(
        self,
        columns: Sequence[Column],
        statement_id: str,
        *,
        total_row_count: int | None = None,
        chunk_count: int | None = None,
    ) -> bytes:
        """The header row: column names. Also decides which columns need a text form."""
        self._cells = [
            (i, _CSV_CELLS[c.json.json_type])
            for i, c in enumerate(columns)
            if c.json.json_type in _CSV_CELLS
        ]
        return self._encode([[c.name for c in columns]])

    def rows(self, rows: Sequence[Sequence[JsonValue]]) -> bytes:
        """The rows, encoded."""
        if not self._cells:
            return self._encode(rows)
        return self._encode(self._textual(row) for row in rows)

    def _textual(self, row: Sequence[JsonValue]) -> list[JsonValue]:
        out = list(row)
        for index, cell in self._cells:
            out[index] = cell(out[index])
        return out

    def footer(self, row_count: int, truncated: bool, server_timing: str = "") -> bytes:
        """CSV has no footer."""
        return b""

    def failure(self, body: dict[str, JsonValue]) -> bytes:
        """Nothing: CSV has no place for an error; the cut body says it."""
        return b""
