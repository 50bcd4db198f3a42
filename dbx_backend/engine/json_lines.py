"""NDJSON lines of a chunk, large Arrow chunks written a whole column at a time.

The plain way, which decides every value (`RowConverter` + `encode_rows`): convert each value
to a Python JSON value, then `orjson.dumps` each row. For a large Arrow chunk, most of that
time goes into making Python objects only to write them out again (measured by
bench/normalize_speed.py). Here each column becomes the Arrow string array of its values' JSON
texts through Arrow's kernels (integers, booleans, dates, timestamps and decimals cast to text,
strings quoted, doubles written by orjson in one call per column), and lines are gathered
from those columns and the separators by one `take` per slice of lines. Every text is byte
for byte what the plain way writes for the same value (tests/test_json_lines.py holds them
side by side); a column without such a kernel (nested, binary, float32, non-finite doubles,
strings that need escapes, ...) takes the plain way, value by value, inside the same lines.
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
# A larger batch is written in slices of this many rows (its texts are made a slice at a time).
_GATHER_MAX_ROWS = 1 << 16
# Lines are gathered this many at a time.
_GATHER_ROWS = 2048
# Gather orders kept per result: full slices, and a few shorter last ones.
_ORDERS_KEPT = 4
# Texts of this many bytes or more are gathered with 64-bit offsets.
_LARGE_BYTES = 1 << 30
# The counting array behind every gather order starts this long (32 pieces of a slice).
_COUNTING_MIN = 32 * _GATHER_ROWS
_COUNTING: Any = None
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
    """Some rows as NDJSON: their bytes (one line per row), in pieces of whole lines that are
    written one after another, and how many rows there are."""

    pieces: tuple[bytes | memoryview, ...]
    rows: int

    @classmethod
    def of(cls, data: bytes | memoryview, rows: int) -> Lines:
        return cls((data,), rows)

    @property
    def data(self) -> bytes | memoryview:
        """The lines in one buffer (joined when there are several pieces)."""
        return self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)


# An Arrow column -> (Arrow binary array of its values' JSON texts, what closes each non-null
# text: b"" when the texts are whole, else the closing quote, after an opening one, with what
# comes before it, e.g. b'Z"' for TIMESTAMP), or None for the plain way.
ColumnTexts = Callable[[Any], "tuple[Any, bytes] | None"]


class JsonLines:
    """The NDJSON form for the reader: each chunk's rows as JSON lines."""

    # Large Arrow batches are written by Arrow's kernels, which release the GIL: the reader
    # may convert several chunks at once.
    converts_arrow_by_kernels = True

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
        self._orders: dict[tuple[tuple[bool, ...], int], Any] = {}  # `_order`, by shape

    # -- the reader's ChunkForm -------------------------------------------------------------

    def from_cells(
        self, cells: list[Any], *, check_cells: bool = False, first_row: int = 0
    ) -> Lines:
        """JSON_ARRAY rows: normalized (column by column already), then written row by row."""
        rows = self.converter.convert_rows(cells, check_cells=check_cells, first_row=first_row)
        return Lines.of(encode_rows(rows), len(rows))

    def from_arrow(self, batch: pyarrow.RecordBatch) -> Lines:
        """An Arrow batch's rows; whole columns at a time when the batch is large."""
        columns = self.converter.columns
        if batch.num_rows < max(1, self.min_rows) or not columns:
            return Lines.of(encode_rows(self.converter.convert_arrow(batch)), batch.num_rows)
        if batch.num_columns != len(columns):
            self.converter.convert_arrow(batch)  # raises the schema mismatch, as it words it
        if batch.num_rows > _GATHER_MAX_ROWS:  # keeps each gather's order small
            parts = range(0, batch.num_rows, _GATHER_MAX_ROWS)
            return self.join([self.from_arrow(batch.slice(s, _GATHER_MAX_ROWS)) for s in parts])
        import pyarrow.compute as pc

        # Every line is "[", each column's text between the separators (and the quotes of a
        # column without nulls, which cost no pass of their own), "]\n": one gather of the
        # columns' texts and the separators, row by row, writes them all (`_gather`).
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
        return Lines(self._gather(pieces, batch.num_rows), batch.num_rows)

    def count(self, part: Lines) -> int:
        """Rows in `part`."""
        return part.rows

    def join(self, parts: list[Lines]) -> Lines:
        """The lines of `parts`, in order."""
        if len(parts) == 1:
            return parts[0]
        pieces = tuple(piece for part in parts for piece in part.pieces)
        return Lines(pieces, sum(part.rows for part in parts))

    # -- one column -------------------------------------------------------------------------

    def _column_texts(self, index: int, array: Any) -> tuple[Any, bytes]:
        key = (index, array.type)
        texts = self._texts.get(key)
        if texts is None:
            texts = _column_texts(self.converter.columns[index], array.type, self.options)
            self._texts[key] = texts
        return texts(array) or self._plain(index, array)

    def _gather(self, pieces: list[Any], rows: int) -> tuple[memoryview, ...]:
        """The lines of `pieces` (bytes, and arrays of `rows` texts), one buffer per slice of
        `_GATHER_ROWS` lines. For each slice, one array holds the slice of every array's texts
        and then each separator once; a single `take`, in the order of the lines, puts their
        bytes back to back. About twice as fast as a join kernel, which pays per row for every
        piece, separators included; by slices, the arrays it needs stay small. The slices are
        not joined: they are written one after another."""
        import pyarrow as pa

        merged: list[Any] = []
        for piece in pieces:
            if isinstance(piece, bytes) and merged and isinstance(merged[-1], bytes):
                merged[-1] += piece
            elif not isinstance(piece, bytes) or piece:
                merged.append(piece)
        arrays = [piece for piece in merged if not isinstance(piece, bytes)]
        separators = pa.array([piece for piece in merged if isinstance(piece, bytes)], pa.binary())
        shape = tuple(isinstance(piece, bytes) for piece in merged)
        if sum(_size(array) for array in arrays) >= _LARGE_BYTES:  # past 32-bit offsets
            arrays = [array.cast(pa.large_binary()) for array in arrays]
            separators = separators.cast(pa.large_binary())
        lines: list[memoryview] = []
        for start in range(0, rows, _GATHER_ROWS):
            count = min(_GATHER_ROWS, rows - start)
            texts = pa.concat_arrays([array.slice(start, count) for array in arrays] + [separators])
            lines.append(_values(texts.take(self._order(shape, count))))
            del texts
        return tuple(lines)

    def _order(self, shape: tuple[bool, ...], rows: int) -> Any:
        """Indexes into `_gather`'s array, line after line, for pieces of `shape` (True: a
        separator, False: an array of `rows` texts): array a's row r is a * rows + r, the
        s-th separator arrays * rows + s. Made by kernels, and kept: most are for full slices."""
        key = (shape, rows)
        order = self._orders.get(key)  # most slices have the same size and shape
        if order is not None:
            return order
        import pyarrow as pa
        import pyarrow.compute as pc

        width, arrays = len(shape), shape.count(False)
        starts: list[int] = []  # of each piece of a line, and its step from line to line
        steps: list[int] = []
        seen_arrays = seen_separators = 0
        for separator in shape:
            if separator:
                starts.append(arrays * rows + seen_separators)
                steps.append(0)
                seen_separators += 1
            else:
                starts.append(seen_arrays * rows)
                steps.append(1)
                seen_arrays += 1
        position = _counting(rows * width)
        row = pc.divide(position, width)  # integer division: the line of each position
        piece = pc.subtract(position, pc.multiply(row, width))
        start = pa.array(starts, pa.int32()).take(piece)
        step = pa.array(steps, pa.int32()).take(piece)
        order = pc.add(start, pc.multiply(step, row))
        if len(self._orders) >= _ORDERS_KEPT:
            self._orders.clear()
        self._orders[key] = order
        return order

    def _plain(self, index: int, array: Any) -> tuple[Any, bytes]:
        import pyarrow as pa

        values = self.converter.convert_arrow_column(index, array)
        return pa.array(list(map(orjson.dumps, values)), pa.binary()), b""


def _counting(size: int) -> Any:
    """The int32 array 0, 1, ..., size - 1 (a slice of one kept for the process)."""
    global _COUNTING
    if _COUNTING is None or len(_COUNTING) < size:
        import pyarrow as pa

        _COUNTING = pa.array(range(max(size, _COUNTING_MIN)), pa.int32())
    return _COUNTING.slice(0, size)


def _values(array: Any) -> memoryview:
    """The values of a binary (or large binary) array back to back, without copying them."""
    _, offsets, data = array.buffers()
    if data is None:  # no value holds a byte
        return memoryview(b"")
    start, end = _bounds(array, offsets)
    return memoryview(data)[start:end]


def _size(array: Any) -> int:
    """Bytes of a binary array's values."""
    start, end = _bounds(array, array.buffers()[1])
    return end - start


def _bounds(array: Any, offsets: Any) -> tuple[int, int]:
    import pyarrow as pa

    width = 8 if pa.types.is_large_binary(array.type) else 4
    first = array.offset
    start, end = (
        int.from_bytes(memoryview(offsets)[width * i : width * (i + 1)], "little", signed=True)
        for i in (first, first + len(array))
    )
    return start, end


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
    if not len(array):
        return pa.array([], pa.binary()), b""
    # orjson writes a list of floats in one call, each as it writes that float alone; the
    # numbers hold no comma, so the list's text splits back into one text per value (by a
    # kernel: no Python object per value).
    text = pa.array([orjson.dumps(array.to_pylist())[1:-1]], pa.binary())
    return pc.split_pattern(text, b",").flatten(), b""


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
