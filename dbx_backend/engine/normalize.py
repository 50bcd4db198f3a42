"""The one place where a Databricks value becomes a JSON value.

A column's type alone decides a value's JSON form (DESIGN.md, "The API contract"); the
warehouse's string forms are those of reference §7.3. Choices where the reference is silent:

* TIMESTAMP renders as ``YYYY-MM-DDTHH:MM:SS.fffZ``, always in UTC with a ``Z``: exactly
  JavaScript's ``Date.toISOString`` form, and the form of the reference's example. An input
  offset is applied; no offset means UTC, the session default. The fraction has 3, 6 or 9
  digits, the fewest that hold the value: milliseconds always, micro- and nanoseconds when
  present, never lost (they stay text, not datetime). The digit count depends on the value, not
  on how many digits were sent, so JSON_ARRAY and Arrow give the same text.
* TIMESTAMP_NTZ renders the same wall-clock form without an offset. An offset on the input is
  ignored, not applied: the value has no zone, so converting it would invent one.
* DECIMAL keeps the digits sent and pads the fraction up to the column's scale; it never rounds
  (a value with more digits than its scale is passed on whole, not silently changed).
* Inside ARRAY/MAP/STRUCT the same rules hold at every depth (`values.py`, which decides
  each value; this module converts whole columns, with the measured fast paths beside them).
  VARIANT values, and nested values whose parts `type_text` does not describe, are what their
  JSON text says: integers exact, decimals numbers, non-finite floats "NaN"/"Infinity"/...
"""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache, partial
from math import isfinite
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from dbx_backend.engine.sqltypes import (
    TYPE_NAMES,
    JsonShape,
    SqlType,
    canonical_kind,
    json_shape,
    parse_type,
)
from dbx_backend.engine.values import (
    JsonValue,
    NormalizeOptions,
    base64_text,
    boolean_text,
    bytes_base64,
    check_day,
    date_text,
    decimal_text,
    float_json,
    hex_to_base64,
    json_text,
    long_text,
    nested_text_converter,
    timestamp_ntz_text,
    timestamp_text,
    value_converter,
)
from dbx_backend.warehouse.errors import ProtocolError
from dbx_backend.warehouse.wire import ColumnInfo, ResultManifest

if TYPE_CHECKING:
    import pyarrow

__all__ = ["Column", "JsonValue", "NormalizeOptions", "RowConverter", "columns_from_manifest"]


_DERIVED_TYPE = SqlType("")
_DEFAULT_OPTIONS = NormalizeOptions()
_DERIVED_SHAPE = JsonShape("any")


@dataclass(frozen=True, slots=True)
class Column:
    """One result column as the API returns it."""

    name: str
    type: str
    type_text: str
    position: int
    nullable: bool | None = None
    precision: int | None = None
    scale: int | None = None
    # The parsed type and its values' JSON shape; derived from the fields above when not given.
    sql_type: SqlType = _DERIVED_TYPE
    json: JsonShape = _DERIVED_SHAPE

    def __post_init__(self) -> None:
        if self.sql_type is _DERIVED_TYPE:
            sql_type = parse_type(self.type, self.type_text, self.precision, self.scale)
            object.__setattr__(self, "sql_type", sql_type)
        if self.json is _DERIVED_SHAPE:
            object.__setattr__(self, "json", json_shape(self.sql_type, long_as_string=False))

    def to_json(self) -> dict[str, JsonValue]:
        """The API's column object; `precision`/`scale` only when the type has them."""
        out: dict[str, JsonValue] = {
            "name": self.name,
            "type": self.type,
            "type_text": self.type_text,
            "position": self.position,
            "nullable": self.nullable,
        }
        if self.precision is not None:
            out["precision"] = self.precision
        if self.scale is not None:
            out["scale"] = self.scale
        # The column's own `type` (its reported type_name) stays; the shape adds the rest.
        out |= {k: v for k, v in self.json.to_json().items() if k != "type"}
        return out


Cells = Sequence[Any]  # one column's cells: str | None from JSON_ARRAY, Python values from Arrow
ColumnConverter = Callable[[Cells], Sequence[JsonValue]]

_LEADING_WORD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")
_DECIMAL_PARAMS = re.compile(r"\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


def columns_from_manifest(manifest: ResultManifest, options: NormalizeOptions) -> list[Column]:
    """The API's columns for a result schema, each with the JSON shape `options` give it."""
    return [_column(info, options) for info in manifest.schema_.columns]


def _column(info: ColumnInfo, options: NormalizeOptions) -> Column:
    type_ = canonical_kind(info.type_name or _type_from_text(info.type_text))
    if type_ not in TYPE_NAMES:
        type_ = "UNKNOWN"  # what it is stays in type_text; its values are text
    precision = scale = None
    if type_ == "DECIMAL":
        precision, scale = info.type_precision, info.type_scale
        params = _DECIMAL_PARAMS.search(info.type_text)
        if params is not None:
            precision = precision if precision is not None else int(params[1])
            scale = scale if scale is not None else int(params[2] or 0)
    sql_type = parse_type(type_, info.type_text, precision, scale)
    shape = json_shape(sql_type, long_as_string=options.long_as_string)
    return Column(
        info.name, type_, info.type_text, info.position, None, precision, scale, sql_type, shape
    )


def _type_from_text(type_text: str) -> str:
    # "GEOMETRY(4326)" -> "GEOMETRY", "ARRAY<INT>" -> "ARRAY", "INTERVAL DAY TO SECOND" -> ...
    word = _LEADING_WORD.match(type_text)
    return "UNKNOWN" if word is None else word[1]


class RowConverter:
    """Turns one result's rows into JSON values, with one converter per column chosen once."""

    def __init__(
        self, columns: Sequence[Column], options: NormalizeOptions = _DEFAULT_OPTIONS
    ) -> None:
        self.columns = tuple(columns)
        self.options = options
        column_converters = [_text_column(c, options) for c in self.columns]
        # Text-like columns pass through untouched, so only the others are converted.
        self._work = tuple((i, f) for i, f in enumerate(column_converters) if f is not None)
        # Columns whose conversion would take a number (or anything) as it comes: `int()`,
        # `float()`, nulls, the text itself. The others refuse a cell that is not a string.
        self._lenient = tuple(
            i
            for i, (column, convert) in enumerate(zip(self.columns, column_converters, strict=True))
            if convert is None or canonical_kind(column.type) in _LENIENT_KINDS
        )
        self._arrow_converters: dict[tuple[int, Any], ColumnConverter] = {}

    def convert_rows(
        self, data_array: Iterable[Sequence[Any]], *, check_cells: bool = False, first_row: int = 0
    ) -> list[list[JsonValue]]:
        """JSON_ARRAY rows (strings and nulls, reference §7.2) -> rows of JSON values.

        Every row must be an array of the schema's width, and every cell a value of its column;
        `check_cells` also refuses a number where the protocol sends text, in columns whose
        conversion would take it (INLINE data: the wire model leaves every check to here).
        A malformed row is named by its place in the chunk, the first of `data_array` being
        `first_row`.
        """
        rows = data_array if isinstance(data_array, (list, tuple)) else list(data_array)
        width = len(self.columns)
        with nullcontext() if len(rows) < _GC_PAUSE_MIN_ROWS else _gc_paused():
            if not rows:
                return []
            if not _ROW_TYPES.issuperset(map(type, rows)):
                raise self._bad_row(rows, first_row)
            if set(map(len, rows)) != {width}:
                raise self._bad_width(rows, first_row)
            if not self._work and not (check_cells and self._lenient):
                return list(map(list, rows))
            out: list[list[JsonValue]] = []
            for start in range(0, len(rows), _BLOCK_ROWS):
                out.extend(self._convert_block(rows[start : start + _BLOCK_ROWS], check_cells))
            return out

    def _convert_block(
        self, rows: Sequence[Sequence[Any]], check_cells: bool
    ) -> Iterator[list[JsonValue]]:
        # Column by column: each converter sees a whole column, so it can check it in a few
        # C-speed passes and keep the texts that are already the value. Blocks of rows keep
        # the transposes within the CPU caches: over a whole 1M-row chunk they cost 2x more.
        columns: list[Sequence[JsonValue]] = list(zip(*rows, strict=True))
        if check_cells:
            for index in self._lenient:
                if not _TEXT_CELLS.issuperset(map(type, columns[index])):
                    raise self._bad_cell(index)
        for index, convert in self._work:
            try:
                columns[index] = convert(columns[index])
            except _CELL_ERRORS:
                raise self._bad_cell(index) from None
        return map(list, zip(*columns, strict=True))

    def _bad_row(self, rows: Sequence[Any], first_row: int) -> ProtocolError:
        number = next(n for n, row in enumerate(rows, first_row) if type(row) not in _ROW_TYPES)
        return ProtocolError(f"row {number} of a chunk is not an array")

    def _bad_width(self, rows: Sequence[Sequence[Any]], first_row: int) -> ProtocolError:
        width = len(self.columns)
        number, row = next((n, row) for n, row in enumerate(rows, first_row) if len(row) != width)
        return ProtocolError(
            f"row {number} of a chunk has {len(row)} cells, the schema has {width} columns"
        )

    def convert_arrow(self, batch: pyarrow.RecordBatch) -> list[list[JsonValue]]:
        """Arrow values -> the same JSON values `convert_rows` gives for the same data."""
        if batch.num_columns != len(self.columns):
            raise ProtocolError(
                f"an Arrow batch has {batch.num_columns} columns, the schema {len(self.columns)}"
            )
        if not self.columns:
            return [[] for _ in range(batch.num_rows)]
        with nullcontext() if batch.num_rows < _GC_PAUSE_MIN_ROWS else _gc_paused():
            converted = [self.convert_arrow_column(i, a) for i, a in enumerate(batch.columns)]
            return list(map(list, zip(*converted, strict=True)))

    def convert_arrow_column(self, index: int, array: pyarrow.Array) -> Sequence[JsonValue]:
        """One Arrow column's JSON values, as `convert_arrow` gives them."""
        key = (index, array.type)
        convert = self._arrow_converters.get(key)
        if convert is None:
            convert = _arrow_converter(self.columns[index], array.type, self.options)
            self._arrow_converters[key] = convert
        try:
            return convert(array)
        except _CELL_ERRORS:
            raise self._bad_cell(index) from None

    def _bad_cell(self, index: int) -> ProtocolError:
        # Never the value, nor the parser's message (it quotes the value): raised `from None`.
        column = self.columns[index]
        return ProtocolError(
            f"column {column.name!r} (position {index}) holds a value that is not a valid "
            f"{column.type}"
        )


_CELL_ERRORS = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError)
_ROW_TYPES = frozenset({list, tuple})
_TEXT_CELLS = frozenset({str, type(None)})
_LENIENT_KINDS = frozenset({"BYTE", "SHORT", "INT", "LONG", "FLOAT", "DOUBLE", "NULL"})


class _GcPause:
    """Pauses the cyclic garbage collector while a large chunk is converted, across threads.

    Conversion allocates a list per row and creates no reference cycles, so collections during
    it only cost time: measured on 1M rows x 8 columns, 1.5x the time from JSON_ARRAY and 4x
    from Arrow. Small chunks never pause it, so a busy service still collects between them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._restore = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._restore = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._restore:
                    gc.enable()


_gc_paused = _GcPause()
_GC_PAUSE_MIN_ROWS = 10_000
_BLOCK_ROWS = 2048


# ---- JSON_ARRAY strings -------------------------------------------------------------------
#
# Conversion runs a column at a time. The common column shapes are settled in a few C-speed
# passes over the whole column (map, set, str.translate, slicing), and the texts that already
# are the value are kept as they are; any column the fast check does not vouch for goes cell by
# cell through the converters below, which decide every value and every error.

CellConverter = Callable[[Any], JsonValue]


def _text_column(column: Column, options: NormalizeOptions) -> ColumnConverter | None:
    """The converter for one column of JSON_ARRAY cells; None when the text is the value."""
    kind = canonical_kind(column.type)
    if kind in ("BYTE", "SHORT", "INT") or (kind == "LONG" and not options.long_as_string):
        return _each(int)
    if kind == "LONG":
        return _each(long_text)
    if kind in ("FLOAT", "DOUBLE"):
        return _floats
    if kind == "DECIMAL":
        return partial(_decimals, scale=column.scale)
    if kind == "BOOLEAN":
        return _booleans
    if kind == "DATE":
        return _dates
    if kind in ("TIMESTAMP", "TIMESTAMP_NTZ"):
        return partial(_timestamps, suffix="Z" if kind == "TIMESTAMP" else "")
    if kind == "BINARY":
        return _each(hex_to_base64 if options.binary_input == "hex" else base64_text)
    if kind in ("ARRAY", "MAP", "STRUCT"):
        return _each(nested_text_converter(column.sql_type, options))
    if kind == "VARIANT":
        return _each(json_text)
    if kind == "NULL":
        return _nulls
    # STRING, CHAR, INTERVAL, USER_DEFINED_TYPE, GEOMETRY, GEOGRAPHY and unknown types.
    return None


def _each(convert: CellConverter) -> Callable[[Cells], list[JsonValue]]:
    """A column converter applying `convert` to every non-null cell."""

    def convert_cells(cells: Cells) -> list[JsonValue]:
        if None in cells:
            return [None if cell is None else convert(cell) for cell in cells]
        return list(map(convert, cells))

    return convert_cells


def _present(cells: Cells) -> Cells:
    return [cell for cell in cells if cell is not None] if None in cells else cells


def _as_is(cells: Cells) -> Sequence[JsonValue]:
    return cells


def _nulls(cells: Cells) -> list[JsonValue]:
    return [None] * len(cells)


# Fast path: one finite-sum check instead of a per-value check, 1.2x the rule applied value
# by value on 100k DOUBLE texts (min of 5, tests' 2-core machine).
def _floats(cells: Cells) -> Sequence[JsonValue]:
    if None in cells:
        return _fix_non_finite([None if cell is None else float(cell) for cell in cells])
    return _fix_non_finite(list(map(float, cells)))


def _fix_non_finite(values: list[float | None]) -> Sequence[JsonValue]:
    # One C-speed pass finds whether any NaN/inf is there (a finite sum overflowing only sends
    # us down the exact path); the per-value pass runs only then. Zeros and nulls, dropped by
    # `filter(None, ...)`, add nothing to the sum.
    if isfinite(sum(filter(None, values))):
        return values
    return [float_json(v) if v is not None else None for v in values]


# Fast path: texts already in their output form are kept after a whole-column check, 2.7x the
# rule applied value by value on 100k DECIMAL(18,2) texts.
def _decimals(cells: Cells, scale: int | None) -> Sequence[JsonValue]:
    if scale is not None and _decimals_plain(_present(cells), scale):
        return cells
    return _each(partial(decimal_text, scale=scale))(cells)


def _decimals_plain(texts: Cells, scale: int) -> bool:
    """Whether every text is `-?(0|[1-9][0-9]*)` plus, at a scale, `.` and `scale` digits.

    Such texts are their own output form. The check counts substrings of the texts joined
    between newlines, each count a C-speed pass; every comment states what one count proves.
    """
    count = len(texts)
    joined = "\n" + "\n".join(texts) + "\n"
    if not joined.isascii() or joined.count("\n") != count + 1:
        return False  # no text holds a newline, so each sits between two of them
    shape = joined.translate(_DIGITS_AS_ZERO)
    signs, dots = shape.count("-"), shape.count(".")
    if shape.count("0") + signs + dots + count + 1 != len(shape):
        return False  # nothing but ASCII digits, "-" and "."
    if shape.count("\n-0") != signs or "\n." in shape or "\n\n" in shape:
        return False  # "-" only first and before a digit; a digit first otherwise
    if scale == 0:
        if dots:
            return False
    elif dots != count or shape.count("." + "0" * scale + "\n") != count:
        return False  # one "." per text, then exactly `scale` digits to its end
    # A leading "0" is the whole integer part: after it comes the "." or the text's end.
    ends = "\n" if scale == 0 else "."
    return joined.count("\n0") == joined.count("\n0" + ends) and joined.count("-0") == joined.count(
        "-0" + ends
    )


_BOOLEAN_CELLS: dict[str | None, bool | None] = {"true": True, "false": False, None: None}


# Fast path: one dict lookup per cell for the warehouse's lower case, 4.7x the rule on 100k cells.
def _booleans(cells: Cells) -> list[JsonValue]:
    try:
        return list(map(_BOOLEAN_CELLS.__getitem__, cells))  # the warehouse's lower case
    except KeyError:
        return _each(boolean_text)(cells)


# Fast path: a whole-column shape check and each distinct day checked once, 2.8x the rule
# applied value by value on 100k DATE texts.
def _dates(cells: Cells) -> Sequence[JsonValue]:
    texts = _present(cells)
    if not texts:
        return cells
    joined = "\n".join(texts) + "\n"
    if (
        joined.count("\n") == len(texts)  # so each text ends at its own newline
        and joined.translate(_DIGITS_AS_ZERO) == "0000-00-00\n" * len(texts)
    ):
        try:
            for day in set(texts):  # a result repeats its days: each is checked once, cached
                check_day(day)
        except ValueError:
            pass
        else:
            return cells  # every text is YYYY-MM-DD of a real day: its own output form
    return _each(date_text)(cells)


# Every ASCII digit -> "0", so that one comparison checks the shape of a whole column.
_DIGITS_AS_ZERO = str.maketrans("123456789", "000000000")


# Fast path: columns already rendered (same width, real days and hours) are kept, 3.7x the rule
# applied value by value on 100k millisecond TIMESTAMP texts.
def _timestamps(cells: Cells, suffix: str) -> Sequence[JsonValue]:
    if _timestamps_rendered(_present(cells), suffix):
        return cells
    return _each(timestamp_text if suffix else timestamp_ntz_text)(cells)


def _timestamps_rendered(texts: Cells, suffix: str) -> bool:
    """Whether every text is already its own output form, e.g. `2024-01-15T09:30:00.000Z`.

    The form: `YYYY-MM-DDTHH:MM:SS`, a fraction of 3, 6 or 9 digits whose last 3 are not all
    zero beyond the first 3, then `suffix`; the day and the time real. Texts of one length are
    checked together; a column of several lengths (milli- and microseconds) length by length.
    """
    if not texts or _timestamps_shaped(texts, suffix):
        return True
    lengths = set(map(len, texts))
    return len(lengths) > 1 and all(
        _timestamps_shaped([text for text in texts if len(text) == length], suffix)
        for length in lengths
    )


def _timestamps_shaped(texts: Cells, suffix: str) -> bool:
    # Joined with a newline after each, the texts are records of one width when the count of
    # newlines and the shape of the whole agree; the slices [k::width] then read column k.
    count, width = len(texts), len(texts[0]) + 1
    digits = width - 21 - len(suffix)
    if digits not in (3, 6, 9):
        return False
    joined = "\n".join(texts) + "\n"
    shape = "0000-00-00T00:00:00." + "0" * digits + suffix + "\n"
    if joined.count("\n") != count or joined.translate(_DIGITS_AS_ZERO) != shape * count:
        return False  # also rejects other scripts' digits: `translate` leaves them alone
    if joined[14::width].lstrip("012345") or joined[17::width].lstrip("012345"):
        return False  # minutes and seconds 00-59
    if digits > 3 and f"000{suffix}\n" in joined:
        return False  # fewer digits hold that value
    try:
        for hour in set(map(_HOUR_OF, texts)):
            _check_hour(hour)  # a result repeats its hours: each is checked once, cached
    except ValueError:
        return False
    return True


_HOUR_OF = itemgetter(slice(0, 13))


@lru_cache(maxsize=4096)
def _check_hour(text: str) -> None:
    # `YYYY-MM-DDTHH`, digits where the digits go: a real day, and an hour of it.
    check_day(text[:10])
    if text[11:] > "23":
        raise ValueError("not an hour")


# ---- Arrow --------------------------------------------------------------------------------


def _arrow_converter(
    column: Column, arrow_type: pyarrow.DataType, options: NormalizeOptions
) -> ColumnConverter:
    """The converter for one column as Arrow typed it; strings reuse the JSON_ARRAY path."""
    import pyarrow as pa
    import pyarrow.compute as pc

    types = pa.types
    kind = canonical_kind(column.type)
    text_converter = _text_column(column, options) or _as_is

    def pylist(array: Any) -> list[Any]:
        values: list[Any] = array.to_pylist()
        return values

    if kind == "NULL" or types.is_null(arrow_type):
        return _nulls
    if _is_arrow_text(arrow_type):
        return lambda array: text_converter(pylist(array))
    if kind in ("BYTE", "SHORT", "INT", "LONG") and types.is_integer(arrow_type):
        if kind == "LONG" and options.long_as_string:
            return lambda array: _each(str)(pylist(array))
        return pylist
    if kind in ("FLOAT", "DOUBLE") and types.is_floating(arrow_type):
        if arrow_type.bit_width < 64:
            # Arrow's text for a float32 is its shortest round-trip form, as the warehouse's.
            return lambda array: _floats(pylist(pc.cast(array, pa.string())))
        return _arrow_doubles
    if kind == "DECIMAL" and types.is_decimal(arrow_type):
        exact_scale = decimal_scale_exact(column, arrow_type)
        return partial(_arrow_decimals, exact_scale=exact_scale, fix=text_converter)
    if kind == "BOOLEAN" and types.is_boolean(arrow_type):
        return pylist
    if kind == "DATE" and types.is_date(arrow_type):
        return _arrow_dates
    if kind in ("TIMESTAMP", "TIMESTAMP_NTZ") and types.is_timestamp(arrow_type):
        return partial(_arrow_timestamps, suffix="Z" if kind == "TIMESTAMP" else "")
    if kind == "BINARY" and _is_arrow_bytes(arrow_type):
        return lambda array: _each(bytes_base64)(pylist(array))
    if kind in _SCALAR_KINDS:
        raise ProtocolError(f"column {column.name!r} ({column.type}) arrived as Arrow {arrow_type}")
    # Nested types, and text types that Arrow carries natively (intervals, geo as binary, ...):
    # the value rules of the column's type, with the parts `type_text` left out read from Arrow.
    sql_type = column.sql_type if column.sql_type.known else _sql_type_of(arrow_type, kind)
    nested = value_converter(sql_type, options)
    return lambda array: _each(nested)(pylist(array))


_SCALAR_KINDS = frozenset(
    {"BYTE", "SHORT", "INT", "LONG", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN", "DATE", "BINARY"}
) | {"TIMESTAMP", "TIMESTAMP_NTZ"}


def _arrow_timestamps(array: Any, suffix: str) -> list[JsonValue]:
    values: list[JsonValue] = arrow_timestamp_texts(array, suffix).to_pylist()
    return values


def arrow_timestamp_texts(array: Any, suffix: str) -> Any:
    """A TIMESTAMP (`suffix` "Z") or TIMESTAMP_NTZ ("") Arrow column's texts, as an Arrow
    string array (the whole column at once)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    unit = array.type.unit
    # A zoned Arrow timestamp stores UTC instants: reading them as naive keeps UTC wall time.
    naive = array.view(pa.timestamp(unit)) if array.type.tz is not None else array
    if unit == "s":
        return _arrow_mixed_timestamps(naive, suffix)
    # When milliseconds hold every value, one cast writes the digits `_fraction` keeps for the
    # whole column, "YYYY-MM-DD HH:MM:SS.fff": no per-value choice between 3, 6 and 9 digits.
    narrowed = naive if unit == "ms" else pc.cast(naive, pa.timestamp("ms"), safe=False)
    if unit != "ms" and pc.all(pc.equal(pc.cast(narrowed, naive.type), naive)).as_py() is False:
        return _arrow_mixed_timestamps(naive, suffix)
    texts = pc.cast(narrowed, pa.string())
    lengths = pc.min_max(pc.binary_length(texts)).as_py()
    if lengths["min"] != _MS_TEXT or lengths["max"] != _MS_TEXT:  # a year outside 0001-9999
        return _arrow_mixed_timestamps(naive, suffix)
    # Fixed width: the "T" and the suffix go in by position, on the bytes (ASCII throughout).
    raw = pc.binary_replace_slice(texts.view(pa.binary()), 10, 11, "T")
    if suffix:
        raw = pc.binary_replace_slice(raw, _MS_TEXT, _MS_TEXT, suffix)
    return raw.view(pa.string())


_MS_TEXT = len("YYYY-MM-DD HH:MM:SS.fff")


def _arrow_mixed_timestamps(naive: Any, suffix: str) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    unit = naive.type.unit
    # Arrow's cast writes "YYYY-MM-DD HH:MM:SS" plus all of the unit's fraction digits (0, 3,
    # 6 or 9); `_fraction`'s rule then keeps 3, 6 or 9: drop "000" groups down to milliseconds.
    texts = pc.replace_substring(pc.cast(naive, pa.string()), " ", "T", max_replacements=1)
    if unit == "s":
        texts = pc.binary_join_element_wise(texts, pa.scalar(".000"), pa.scalar(""))
    for _ in range({"ms": 0, "us": 1, "ns": 2}.get(unit, 0)):
        texts = pc.if_else(pc.ends_with(texts, "000"), pc.utf8_slice_codeunits(texts, 0, -3), texts)
    if suffix:
        texts = pc.binary_join_element_wise(texts, pa.scalar(suffix), pa.scalar(""))
    return texts


def _arrow_dates(array: Any) -> list[JsonValue]:
    import pyarrow as pa
    import pyarrow.compute as pc

    # A result holds few distinct days: each is written once, and rows share its text.
    encoded = array.dictionary_encode()
    texts: dict[int | None, str | None] = dict(
        enumerate(pc.cast(encoded.dictionary, pa.string()).to_pylist())
    )
    texts[None] = None
    return list(map(texts.__getitem__, encoded.indices.to_pylist()))


def _arrow_doubles(array: Any) -> Sequence[JsonValue]:
    import pyarrow.compute as pc

    values: list[float | None] = array.to_pylist()
    if pc.all(pc.is_finite(array)).as_py() is False:  # nulls skipped; all-null gives None
        return [float_json(v) if v is not None else None for v in values]
    return values


def _arrow_decimals(array: Any, exact_scale: bool, fix: ColumnConverter) -> Sequence[JsonValue]:
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = arrow_decimal_texts(array, exact_scale=exact_scale)
    if texts is not None:
        values: list[JsonValue] = texts.to_pylist()
        return values
    return fix(pc.cast(array, pa.string()).to_pylist())


def arrow_decimal_texts(array: Any, *, exact_scale: bool) -> Any:
    """A DECIMAL Arrow column's texts as an Arrow string array, when Arrow's own text is the
    value's form; None when some value must be rendered by the value rules."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = pc.cast(array, pa.string())
    # Arrow writes E-notation, as Java's BigDecimal does, only at a negative scale or when a
    # value's adjusted exponent is below -6 (tiny values, and zeros at a scale above 6): those,
    # and a scale below the column's, go through the JSON_ARRAY path, which renders plain.
    scale = array.type.scale
    if exact_scale and (0 <= scale <= 6 or not pc.any(pc.match_substring(texts, "E")).as_py()):
        return texts
    return None


def decimal_scale_exact(column: Column, arrow_type: Any) -> bool:
    """Whether an Arrow decimal of `arrow_type` is at the column's scale (its text then is)."""
    return column.scale is None or column.scale == arrow_type.scale


def text_is_value(column: Column, options: NormalizeOptions) -> bool:
    """Whether the column's values are their text, untouched (STRING, CHAR, INTERVAL, ...)."""
    return _text_column(column, options) is None


def _is_arrow_text(arrow_type: Any) -> bool:
    import pyarrow as pa

    types = pa.types
    return bool(
        types.is_string(arrow_type)
        or types.is_large_string(arrow_type)
        or types.is_string_view(arrow_type)
    )


def _is_arrow_bytes(arrow_type: Any) -> bool:
    import pyarrow as pa

    types = pa.types
    return bool(
        types.is_binary(arrow_type)
        or types.is_large_binary(arrow_type)
        or types.is_binary_view(arrow_type)
        or types.is_fixed_size_binary(arrow_type)
    )


_ARROW_INTEGERS = {8: "BYTE", 16: "SHORT", 32: "INT", 64: "LONG"}


def _sql_type_of(arrow_type: Any, kind: str) -> SqlType:
    """The SQL type an Arrow type carries; `kind` when Arrow cannot tell (text, intervals)."""
    import pyarrow as pa

    types = pa.types
    if types.is_list(arrow_type) or types.is_large_list(arrow_type):
        return SqlType("ARRAY", element=_sql_type_of(arrow_type.value_type, "UNKNOWN"))
    if types.is_fixed_size_list(arrow_type):
        return SqlType("ARRAY", element=_sql_type_of(arrow_type.value_type, "UNKNOWN"))
    if types.is_map(arrow_type):
        key = _sql_type_of(arrow_type.key_type, "UNKNOWN")
        return SqlType("MAP", key=key, value=_sql_type_of(arrow_type.item_type, "UNKNOWN"))
    if types.is_struct(arrow_type):
        fields = tuple(
            (arrow_type.field(i).name, _sql_type_of(arrow_type.field(i).type, "UNKNOWN"))
            for i in range(arrow_type.num_fields)
        )
        return SqlType("STRUCT", fields=fields)
    if types.is_integer(arrow_type):
        return SqlType(_ARROW_INTEGERS.get(arrow_type.bit_width, "LONG"))
    if types.is_floating(arrow_type):
        return SqlType("FLOAT" if arrow_type.bit_width < 64 else "DOUBLE")
    if types.is_decimal(arrow_type):
        return SqlType("DECIMAL", arrow_type.precision, arrow_type.scale)
    if types.is_boolean(arrow_type):
        return SqlType("BOOLEAN")
    if types.is_date(arrow_type):
        return SqlType("DATE")
    if types.is_timestamp(arrow_type):
        return SqlType("TIMESTAMP" if arrow_type.tz is not None else "TIMESTAMP_NTZ")
    if _is_arrow_bytes(arrow_type):
        return SqlType("BINARY")
    if _is_arrow_text(arrow_type):
        return SqlType("STRING")
    return SqlType(kind)
