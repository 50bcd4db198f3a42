"""NDJSON lines of a chunk, large Arrow chunks written a whole column at a time.

The plain way, which decides every value (`RowConverter` + `encode_rows`): convert each value
to a Python JSON value, then `orjson.dumps` each row. For a large Arrow chunk, most of that
time goes into making Python objects only to write them out again (measured by
bench/normalize_speed.py). Here each column becomes the Arrow string array of its values' JSON
texts through Arrow's kernels (integers, booleans, dates, timestamps and decimals cast to text,
strings quoted, doubles written by orjson in one call per column), and rows are joined from
those columns by one more kernel. Every text is byte for byte what the plain way writes for
the same value (tests/test_json_lines.py holds them side by side); a column without such a
kernel (nested, binary, float32, non-finite doubles, strings that need escapes, ...) takes
the plain way, value by value, inside the same lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from dbx_backend.engine.normalize import (
    Column,
    JsonValue,
    NormalizeOptions,
    RowConverter,
    arrow_decimal_texts,
    arrow_timestamp_texts,
    decimal_scale_exact,
    text_is_value,
)
from dbx_backend.engine.sqltypes import canonical_kind

if TYPE_CHECKING:
    import pyarrow

# Below this many rows an Arrow batch goes the plain way: the kernels' fixed cost dominates.
VECTOR_MIN_ROWS = 1024
# Separator arrays are made at least this long, so that most chunks slice the first one.
_REPEATED_MIN_ROWS = 16_384
# Separator arrays up to this long are kept for every result of the process: a few dozen
# separators (the pieces between columns of each kind) of at most ~0.5 MB each.
_SHARED_REPEATED_ROWS = 65_536
_SHARED_REPEATED: dict[bytes, Any] = {}
# Characters JSON must escape inside a string (RFC 8259 §7): orjson escapes exactly these.
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'
# The same characters as a translation that deletes them: a text that keeps its length holds
# none (several times faster than searching it with the pattern).
_ESCAPED_BYTES = bytes(range(0x20)) + b'"\\'


def encode_rows(rows: Sequence[Sequence[JsonValue]]) -> bytes:
    """Rows as NDJSON lines, the plain way: one JSON array per row."""
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


@dataclass(frozen=True, slots=True)
class Lines:
    """Some rows as NDJSON: their bytes (one line per row) and how many there are."""

    data: bytes | memoryview
    rows: int


# An Arrow column -> (Arrow binary array of its values' JSON texts, what closes each non-null
# text: b"" when the texts are whole, else the closing quote, after an opening one, with what
# comes before it, e.g. b'Z"' for TIMESTAMP), or None for the plain way.
ColumnTexts = Callable[[Any], "tuple[Any, bytes] | None"]


class JsonLines:
    """The NDJSON form for the reader: each chunk's rows as JSON lines."""

    def __init__(
        self,
        columns: Sequence[Column],
        options: NormalizeOptions,
        *,
        min_rows: int = VECTOR_MIN_ROWS,
    ) -> None:
        self.converter = RowConverter(columns, options)
        self.options = options
        self.min_rows = min_rows
        self._texts: dict[tuple[int, Any], ColumnTexts] = {}
        self._repeated: dict[bytes, Any] = {}  # separators as arrays (`_repeat`)

    # -- the reader's ChunkForm -------------------------------------------------------------

    def from_cells(
        self, cells: list[Any], *, check_cells: bool = False, first_row: int = 0
    ) -> Lines:
        """JSON_ARRAY rows: normalized (column by column already), then written row by row."""
        rows = self.converter.convert_rows(cells, check_cells=check_cells, first_row=first_row)
        return Lines(encode_rows(rows), len(rows))

    def from_arrow(self, batch: pyarrow.RecordBatch) -> Lines:
        """An Arrow batch's rows; whole columns at a time when the batch is large."""
        columns = self.converter.columns
        if batch.num_rows < max(1, self.min_rows) or not columns:
            return Lines(encode_rows(self.converter.convert_arrow(batch)), batch.num_rows)
        if batch.num_columns != len(columns):
            self.converter.convert_arrow(batch)  # raises the schema mismatch, as it words it
        import pyarrow.compute as pc

        # One kernel writes every line: "[", each column's texts between the separators (and
        # the quotes of a column without nulls, which cost no pass of their own), "]\n".
        pieces: list[Any] = [b"["]
        for index, array in enumerate(batch.columns):
            texts, closing = self._column_texts(index, array)
            separator = b"," if index else b""
            opening = b'"' if closing else b""
            if closing and not texts.null_count:
                pieces += [separator + opening, texts, closing]
                continue
            if closing:
                texts = _wrapped(texts, opening, closing)
            if texts.null_count:
                texts = pc.fill_null(texts, _scalar(b"null"))
            pieces += [separator, texts]
        pieces.append(b"]\n")
        lines = pc.binary_join_element_wise(*self._arrays(pieces, batch.num_rows), _scalar(b""))
        return Lines(_values(lines), batch.num_rows)

    def count(self, part: Lines) -> int:
        """Rows in `part`."""
        return part.rows

    def join(self, parts: list[Lines]) -> Lines:
        """The lines of `parts`, in order."""
        if len(parts) == 1:
            return parts[0]
        return Lines(b"".join(part.data for part in parts), sum(part.rows for part in parts))

    # -- one column -------------------------------------------------------------------------

    def _column_texts(self, index: int, array: Any) -> tuple[Any, bytes]:
        key = (index, array.type)
        texts = self._texts.get(key)
        if texts is None:
            texts = _column_texts(self.converter.columns[index], array.type, self.options)
            self._texts[key] = texts
        return texts(array) or self._plain(index, array)

    def _arrays(self, pieces: list[Any], rows: int) -> list[Any]:
        """`pieces` with adjacent bytes merged, each then an array repeating it `rows` times:
        the join kernel takes arrays several times faster than scalars it must broadcast."""
        merged: list[Any] = []
        for piece in pieces:
            if isinstance(piece, bytes) and merged and isinstance(merged[-1], bytes):
                merged[-1] += piece
            elif not isinstance(piece, bytes) or piece:
                merged.append(piece)
        return [
            self._repeat(piece, rows) if isinstance(piece, bytes) else piece for piece in merged
        ]

    def _repeat(self, piece: bytes, rows: int) -> Any:
        # One array per piece, as long as the longest chunk yet, sliced (no copy) for shorter
        # ones. Chunks are written by several threads at once: an array is whole before it is
        # stored, and one that is replaced stays valid for whoever still holds it. Arrays up
        # to `_SHARED_REPEATED_ROWS` serve every result of the process (making one costs
        # milliseconds: a new result's first rows would wait for them); longer ones, this one.
        repeated = self._repeated.get(piece) or _SHARED_REPEATED.get(piece)
        if repeated is None or len(repeated) < rows:
            size = max(rows, _REPEATED_MIN_ROWS)
            repeated = _repeated_array(piece, size)
            if size <= _SHARED_REPEATED_ROWS:
                _SHARED_REPEATED[piece] = repeated
            else:
                self._repeated[piece] = repeated
        return repeated.slice(0, rows)

    def _plain(self, index: int, array: Any) -> tuple[Any, bytes]:
        import pyarrow as pa

        values = self.converter.convert_arrow_column(index, array)
        return pa.array(list(map(orjson.dumps, values)), pa.binary()), b""


def _repeated_array(piece: bytes, size: int) -> Any:
    """A binary array of `size` values, each `piece`."""
    import pyarrow as pa

    offsets = pa.array(range(0, (size + 1) * len(piece), len(piece)), pa.int32())
    data = pa.py_buffer(piece * size)
    return pa.Array.from_buffers(pa.binary(), size, [None, offsets.buffers()[1], data])


def _values(array: Any) -> memoryview:
    """The values of a binary array back to back, without copying them."""
    _, offsets, data = array.buffers()
    if data is None:  # no value holds a byte
        return memoryview(b"")
    first = array.offset
    start, end = (
        int.from_bytes(memoryview(offsets)[4 * i : 4 * i + 4], "little", signed=True)
        for i in (first, first + len(array))
    )
    return memoryview(data)[start:end]


def _scalar(data: bytes) -> Any:
    import pyarrow as pa

    return pa.scalar(data, pa.binary())


def _column_texts(column: Column, arrow_type: Any, options: NormalizeOptions) -> ColumnTexts:
    """The whole-column writer of one column as Arrow typed it (None: the plain way)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    types = pa.types
    kind = canonical_kind(column.type)

    def cast(array: Any) -> Any:
        return pc.cast(array, pa.string()).view(pa.binary())

    if kind in ("BYTE", "SHORT", "INT", "LONG") and types.is_integer(arrow_type):
        closing = b'"' if kind == "LONG" and options.long_as_string else b""
        return lambda array: (cast(array), closing)
    if kind == "BOOLEAN" and types.is_boolean(arrow_type):
        return lambda array: (cast(array), b"")
    if kind == "DOUBLE" and types.is_float64(arrow_type):
        return _doubles
    if kind == "DECIMAL" and types.is_decimal(arrow_type):
        exact = decimal_scale_exact(column, arrow_type)
        return partial(_decimals, exact_scale=exact)
    if kind == "DATE" and types.is_date32(arrow_type):
        return _dates
    if kind in ("TIMESTAMP", "TIMESTAMP_NTZ") and types.is_timestamp(arrow_type):
        # The "Z" of a TIMESTAMP goes in with the closing quote: no pass of its own.
        closing = b'Z"' if kind == "TIMESTAMP" else b'"'
        return lambda array: (arrow_timestamp_texts(array, "").view(pa.binary()), closing)
    if text_is_value(column, options) and (
        types.is_string(arrow_type) or types.is_large_string(arrow_type)
    ):
        return _strings
    return _plain_way


def _plain_way(array: Any) -> None:
    return None


def _wrapped(texts: Any, opening: bytes, closing: bytes) -> Any:
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(_scalar(opening), texts, _scalar(closing), _scalar(b""))


def _decimals(array: Any, exact_scale: bool) -> tuple[Any, bytes] | None:
    import pyarrow as pa

    texts = arrow_decimal_texts(array, exact_scale=exact_scale)
    return None if texts is None else (texts.view(pa.binary()), b'"')


def _doubles(array: Any) -> tuple[Any, bytes] | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pc.all(pc.is_finite(array)).as_py() is False:
        return None  # NaN and the infinities are strings: the plain way writes them
    # orjson writes a list of floats in one call, each as it writes that float alone; the
    # numbers hold no comma, so the list's text splits back into one text per value.
    texts = orjson.dumps(array.to_pylist())[1:-1].split(b",") if len(array) else []
    return pa.array(texts, pa.binary()), b""


def _dates(array: Any) -> tuple[Any, bytes] | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    # A result holds few distinct days: each is written once, and rows take its text.
    encoded = array.dictionary_encode()
    days = pc.cast(encoded.dictionary, pa.string()).view(pa.binary())
    lengths = pc.min_max(pc.binary_length(days)).as_py()
    if lengths["min"] is not None and (lengths["min"], lengths["max"]) != (10, 10):
        return None  # a year outside 0001-9999: the plain way
    return days.take(encoded.indices), b'"'


def _strings(array: Any) -> tuple[Any, bytes] | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        array.validate(full=True)  # UTF-8 checked, as reading it into Python would
        if not pa.types.is_string(array.type):
            array = array.cast(pa.string())
    except pa.ArrowInvalid:
        return None  # the plain way reports the bad value
    binary = array.view(pa.binary())
    text = bytes(_values(binary))
    if len(text.translate(None, _ESCAPED_BYTES)) == len(text):  # none needs an escape
        return binary, b'"'
    # Only the strings that need escapes are written by orjson, the others are quoted.
    escape = pc.fill_null(pc.match_substring_regex(array, _NEEDS_ESCAPE), False)
    escaped = pa.array(list(map(orjson.dumps, array.filter(escape).to_pylist())), pa.binary())
    return pc.replace_with_mask(_wrapped(binary, b'"', b'"'), escape, escaped), b""
