"""Streamed query results: NDJSON and CSV written chunk by chunk, with back-pressure.

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
from typing import Literal

import orjson

from dbx_backend.engine import Column, JsonValue

ResultFormat = Literal["json", "ndjson", "csv"]
NDJSON = "application/x-ndjson"
CSV = "text/csv"


def negotiate(accept: str) -> ResultFormat:
    """The response format for an `Accept` header: NDJSON or CSV when asked, JSON otherwise."""
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in (NDJSON, "application/ndjson", "application/jsonl"):
            return "ndjson"
        if media == CSV:
            return "csv"
        if media in ("application/json", "*/*", "application/*"):
            return "json"
    return "json"


class NdjsonWriter:
    """Encodes a result as newline-delimited JSON."""

    content_type = NDJSON

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
        return b"".join(orjson.dumps(row) + b"\n" for row in rows)

    def footer(self, row_count: int, truncated: bool, server_timing: str = "") -> bytes:
        """The last line of a complete result, with where the time went."""
        line = {"row_count": row_count, "truncated": truncated, "server_timing": server_timing}
        return orjson.dumps(line) + b"\n"

    def error(self, body: dict[str, JsonValue]) -> bytes:
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

    def __init__(self) -> None:
        self._cells: list[tuple[int, Callable[[JsonValue], JsonValue]]] = []

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
