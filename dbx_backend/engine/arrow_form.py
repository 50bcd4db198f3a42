"""The Arrow form of a result: the Arrow type of every Databricks type, and chunks in it.

The mapping (the README's type table): BYTE int8, SHORT int16, INT int32, LONG int64, FLOAT
float32, DOUBLE float64, DECIMAL(p,s) decimal128(p,s), BOOLEAN bool, STRING and CHAR utf8, DATE
date32, TIMESTAMP timestamp[us, tz=UTC], TIMESTAMP_NTZ timestamp[us], BINARY binary, NULL null,
ARRAY list, MAP map and STRUCT struct of their parts' types. INTERVAL, VARIANT, GEOMETRY,
GEOGRAPHY, USER_DEFINED_TYPE, unknown types and nested types holding one of them are "open":
they keep the Arrow type the warehouse gives them, and are utf8 text when the warehouse sent
JSON_ARRAY (a string as it is, any other value as its JSON).

Arrow chunks pass through untouched where a column's Arrow type already is its mapped type.
Otherwise the column is cast where Arrow does it exactly (wider integers, other string, binary,
list or timestamp layouts, a time zone that is UTC by another name), else its values go
through the normalizer's rules (`RowConverter`) and are built from their JSON values. JSON_ARRAY
chunks are normalized first, so their Arrow values are those of the JSON answer.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dbx_backend.engine.normalize import Column, JsonValue, NormalizeOptions, RowConverter
from dbx_backend.engine.reader import pyarrow_module
from dbx_backend.engine.sqltypes import SqlType
from dbx_backend.engine.values import NON_FINITE, TIMESTAMP, fraction_digits
from dbx_backend.warehouse.errors import ProtocolError

pyarrow_module()  # the system allocator, before this module allocates (see the reader)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
# Field metadata: the warehouse's description of each column (its `type_text` says the rest).
TYPE_TEXT_KEY = b"type_text"
TYPE_NAME_KEY = b"type_name"
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "+00:00", "Z", "GMT", "Etc/GMT", "Etc/UCT", "UCT"})
_SCALARS: dict[str, pa.DataType] = {
    "BYTE": pa.int8(),
    "SHORT": pa.int16(),
    "INT": pa.int32(),
    "LONG": pa.int64(),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "STRING": pa.string(),
    "CHAR": pa.string(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "TIMESTAMP_NTZ": pa.timestamp("us"),
    "BINARY": pa.binary(),
    "NULL": pa.null(),
}
# Rows per record batch built from JSON values: a chunk of JSON_ARRAY text is cut to this size.
_BATCH_ROWS = 65_536


def arrow_type(sql_type: SqlType) -> pa.DataType | None:
    """The documented Arrow type of `sql_type`; None for an open type (the warehouse's own)."""
    kind = sql_type.kind
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "DECIMAL":
        # A precision the warehouse did not state is the widest (Databricks' maximum is 38).
        precision, scale = sql_type.precision or 38, sql_type.scale
        if scale is None or not 0 <= scale <= precision <= 38:
            return None
        return pa.decimal128(precision, scale)
    if kind == "ARRAY" and sql_type.element is not None:
        element = arrow_type(sql_type.element)
        return None if element is None else pa.list_(element)
    if kind == "MAP" and sql_type.key is not None and sql_type.value is not None:
        key, value = arrow_type(sql_type.key), arrow_type(sql_type.value)
        return None if key is None or value is None else pa.map_(key, value)
    if kind == "STRUCT" and sql_type.fields is not None:
        parts = [(name, arrow_type(part)) for name, part in sql_type.fields]
        if any(part is None for _, part in parts):
            return None
        return pa.struct([pa.field(name, part) for name, part in parts if part is not None])
    return None  # INTERVAL, VARIANT, GEOMETRY, GEOGRAPHY, USER_DEFINED_TYPE, unknown


def arrow_field(column: Column, arrow: pa.DataType) -> pa.Field:
    """The column as an Arrow field: its type and, in the metadata, the warehouse's names."""
    metadata = {TYPE_TEXT_KEY: column.type_text.encode(), TYPE_NAME_KEY: column.type.encode()}
    return pa.field(column.name, arrow, nullable=True, metadata=metadata)


class ArrowBatches:
    """The Arrow form for the reader: each chunk as record batches of one fixed schema.

    The schema is fixed by the first chunk (an open column takes the Arrow type the warehouse
    gave it there); every later batch is brought to it, so the stream has one schema.
    """

    def __init__(
        self, columns: Sequence[Column], *, metadata: dict[str, str] | None = None
    ) -> None:
        self.columns = tuple(columns)
        self.targets = [arrow_type(column.sql_type) for column in self.columns]
        self.metadata = {k.encode(): v.encode() for k, v in (metadata or {}).items()}
        # Values that must be converted follow the JSON answer's rules; LONGs stay numbers.
        self._rows = RowConverter(self.columns, NormalizeOptions())
        self._schema: pa.Schema | None = None

    # -- the reader's ChunkForm -------------------------------------------------------------

    def from_cells(
        self, cells: list[Any], *, check_cells: bool = False, first_row: int = 0
    ) -> list[pa.RecordBatch]:
        """JSON_ARRAY rows: normalized, then built column by column."""
        return [
            self._from_rows(
                self._rows.convert_rows(
                    cells[start : start + _BATCH_ROWS],
                    check_cells=check_cells,
                    first_row=first_row + start,
                )
            )
            for start in range(0, len(cells), _BATCH_ROWS)
        ]

    def from_rows(self, rows: Sequence[Sequence[JsonValue]]) -> list[pa.RecordBatch]:
        """Rows of a JSON answer (normalized values, LONGs as numbers), e.g. a cached one."""
        return [
            self._from_rows(rows[start : start + _BATCH_ROWS])
            for start in range(0, len(rows), _BATCH_ROWS)
        ]

    def _from_rows(self, rows: Sequence[Sequence[JsonValue]]) -> pa.RecordBatch:
        try:
            values = list(zip(*rows, strict=True)) if rows else [()] * len(self.columns)
        except ValueError:
            values = []
        if len(values) != len(self.columns):
            raise ProtocolError(f"a row does not have the schema's {len(self.columns)} columns")
        arrays = [
            self._from_json(index, column_values, self._fixed_type(index))
            for index, column_values in enumerate(values)
        ]
        return self._batch(arrays, len(rows))

    def from_arrow(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """An Arrow batch with each column passed through, cast, or converted."""
        if batch.num_columns != len(self.columns):
            raise ProtocolError(
                f"an Arrow batch has {batch.num_columns} columns, the schema {len(self.columns)}"
            )
        arrays = [self._column(index, array) for index, array in enumerate(batch.columns)]
        return [self._batch(arrays, batch.num_rows)]

    def count(self, part: list[pa.RecordBatch]) -> int:
        """Rows in `part`."""
        return sum(batch.num_rows for batch in part)

    def join(self, parts: list[list[pa.RecordBatch]]) -> list[pa.RecordBatch]:
        """The batches of `parts`, in order."""
        return [batch for part in parts for batch in part]

    def passes_through(self, schema: pa.Schema) -> bool:
        """Whether batches of `schema` pass through untouched (every column already in its
        stream type): converting them costs no more than a look at their types."""
        return len(schema) == len(self.columns) and all(
            (fixed := self._fixed_type(index)) is None or field.type.equals(fixed)
            for index, field in enumerate(schema)
        )

    # -- the schema -------------------------------------------------------------------------

    def schema(self) -> pa.Schema:
        """The stream's schema: fixed by the first chunk, else the mapping (open types utf8)."""
        if self._schema is None:
            types = [pa.string() if t is None else t for t in self.targets]
            self._schema = self._make_schema(types)
        return self._schema

    def _make_schema(self, types: Sequence[pa.DataType]) -> pa.Schema:
        fields = [arrow_field(c, t) for c, t in zip(self.columns, types, strict=True)]
        return pa.schema(fields, metadata=self.metadata or None)

    def _fixed_type(self, index: int) -> pa.DataType | None:
        if self._schema is not None:
            fixed: pa.DataType = self._schema.field(index).type
            return fixed
        return self.targets[index]

    def _batch(self, arrays: list[pa.Array], num_rows: int) -> pa.RecordBatch:
        if self._schema is None:
            self._schema = self._make_schema([array.type for array in arrays])
        if not arrays:
            return pa.RecordBatch.from_pylist([{}] * num_rows, schema=self._schema)
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema)

    # -- one column -------------------------------------------------------------------------

    def _column(self, index: int, array: pa.Array) -> pa.Array:
        target = self._fixed_type(index)
        if target is None or array.type.equals(target):
            return array  # the warehouse's values, untouched
        cast = _exact_cast(array, target)
        if cast is not None:
            return cast
        column = self.columns[index]
        if self.targets[index] is None:
            raise ProtocolError(
                f"column {column.name!r} ({column.type}) changed its Arrow type from "
                f"{target} to {array.type} between chunks"
            )
        # Any other Arrow type: its values by the JSON answer's rules, then built as `target`.
        one = pa.RecordBatch.from_arrays([array], names=[column.name])
        values = [row[0] for row in RowConverter([column], NormalizeOptions()).convert_arrow(one)]
        return self._from_json(index, values, target)

    def _from_json(
        self, index: int, values: Sequence[JsonValue], target: pa.DataType | None
    ) -> pa.Array:
        column = self.columns[index]
        try:
            if self.targets[index] is None:  # open: the JSON answer's value as text
                return pa.array([_as_text(v) for v in values], pa.string())
            return _json_array(values, column.sql_type, target or self.targets[index])
        except (pa.ArrowInvalid, pa.ArrowTypeError, *_VALUE_ERRORS):
            raise ProtocolError(
                f"column {column.name!r} (position {index}) holds a value that its Arrow type "
                f"{target} cannot hold"
            ) from None


_VALUE_ERRORS = (ValueError, TypeError, KeyError, OverflowError, ArithmeticError)


def _as_text(value: JsonValue) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _exact_cast(array: pa.Array, target: pa.DataType) -> pa.Array | None:
    """`array` as `target` when Arrow converts every value exactly, else None."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if not _exactly_castable(array.type, target):
        return None
    try:
        return pc.cast(array, target, safe=True)  # safe: a value that does not fit raises
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def _exactly_castable(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether a cast from `source` to `target` moves values without reading or rounding
    them: another width or layout of the same kind of value, never text parsed as numbers."""
    types = pa.types
    if types.is_null(source) or source.equals(target):
        return True
    if types.is_integer(source):
        return bool(types.is_integer(target) or types.is_decimal(target))
    if types.is_decimal(source):
        return bool(types.is_decimal(target))
    if types.is_timestamp(source) and types.is_timestamp(target):
        # The values are UTC instants whatever the label: only a UTC label may be renamed,
        # and a zone is never added or dropped (that changes what a value means).
        if source.tz is None or target.tz is None:
            return source.tz is None and target.tz is None
        return source.tz in _UTC_NAMES
    if types.is_date(source):
        return bool(types.is_date(target))
    if _is_text(source):
        return bool(types.is_string(target))
    if _is_bytes(source):
        return bool(types.is_binary(target))
    if _is_list(source) and types.is_list(target):
        return _exactly_castable(source.value_type, target.value_type)
    if types.is_map(source) and types.is_map(target):
        return _exactly_castable(source.key_type, target.key_type) and _exactly_castable(
            source.item_type, target.item_type
        )
    if types.is_struct(source) and types.is_struct(target):
        names = [source.field(i).name for i in range(source.num_fields)]
        wanted = [target.field(i).name for i in range(target.num_fields)]
        return names == wanted and all(
            _exactly_castable(source.field(i).type, target.field(i).type)
            for i in range(source.num_fields)
        )
    return False


def _is_list(arrow: pa.DataType) -> bool:
    types = pa.types
    return bool(
        types.is_list(arrow) or types.is_large_list(arrow) or types.is_fixed_size_list(arrow)
    )


def _is_text(arrow: pa.DataType) -> bool:
    types = pa.types
    return bool(
        types.is_string(arrow) or types.is_large_string(arrow) or types.is_string_view(arrow)
    )


def _is_bytes(arrow: pa.DataType) -> bool:
    types = pa.types
    return bool(
        types.is_binary(arrow)
        or types.is_large_binary(arrow)
        or types.is_binary_view(arrow)
        or types.is_fixed_size_binary(arrow)
    )


# ---- JSON values -> Arrow ------------------------------------------------------------------


def _json_array(values: Sequence[JsonValue], sql_type: SqlType, target: pa.DataType) -> pa.Array:
    """A column of normalized JSON values (the JSON answer's) as an Arrow array of `target`."""
    kind = sql_type.kind
    if kind in ("DECIMAL", "DATE", "TIMESTAMP", "TIMESTAMP_NTZ"):
        # Their JSON text is Arrow's own text form of the value: one cast parses the column.
        return pc.cast(pa.array(values, pa.string()), target, safe=True)
    if kind in ("FLOAT", "DOUBLE") and any(type(v) is str for v in values):
        return pa.array([None if v is None else _float(v) for v in values], target)
    if kind in ("BINARY", "ARRAY", "MAP", "STRUCT"):
        convert = _python_converter(sql_type)
        return pa.array([None if v is None else convert(v) for v in values], target)
    return pa.array(values, target)


PythonValue = Any  # what pyarrow builds a value from: int, Decimal, datetime, bytes, ...
ToPython = Callable[[JsonValue], PythonValue]
_NON_FINITE_TEXTS = frozenset(NON_FINITE.values())


def _float(value: JsonValue) -> float:
    if isinstance(value, str) and value in _NON_FINITE_TEXTS:
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    raise TypeError("not a float")


def _text(value: JsonValue) -> str:
    if isinstance(value, str):
        return value
    raise TypeError("not text")


def _decimal(value: JsonValue) -> Decimal:
    return Decimal(_text(value))


def _date(value: JsonValue) -> date:
    return date.fromisoformat(_text(value))


def _bytes(value: JsonValue) -> bytes:
    return base64.b64decode(_text(value), validate=True)


@functools.lru_cache(maxsize=256)
def _python_converter(sql_type: SqlType) -> ToPython:
    """One value (or a nested value's part), from its JSON value to what pyarrow builds from."""
    kind = sql_type.kind
    if kind in ("FLOAT", "DOUBLE"):
        return _float
    if kind == "DECIMAL":
        return _decimal
    if kind == "DATE":
        return _date
    if kind in ("TIMESTAMP", "TIMESTAMP_NTZ"):
        return functools.partial(_datetime, zoned=kind == "TIMESTAMP")
    if kind == "BINARY":
        return _bytes
    if kind == "ARRAY" and sql_type.element is not None:
        return functools.partial(_list, item=_python_converter(sql_type.element))
    if kind == "STRUCT" and sql_type.fields is not None:
        fields = tuple((name, _python_converter(part)) for name, part in sql_type.fields)
        return functools.partial(_record, fields=fields)
    if kind == "MAP" and sql_type.key is not None and sql_type.value is not None:
        key, value = _python_converter(sql_type.key), _python_converter(sql_type.value)
        return functools.partial(_entries, key=key, value=value)
    return _same


def _same(value: JsonValue) -> PythonValue:
    return value


def _list(values: JsonValue, item: ToPython) -> list[PythonValue]:
    if not isinstance(values, list):
        raise TypeError("not an array")
    return [None if v is None else item(v) for v in values]


def _record(record: JsonValue, fields: tuple[tuple[str, ToPython], ...]) -> dict[str, PythonValue]:
    if not isinstance(record, dict):
        raise TypeError("not a struct")
    return {
        name: None if (v := record.get(name)) is None else convert(v) for name, convert in fields
    }


def _entries(
    pairs: JsonValue, key: ToPython, value: ToPython
) -> list[tuple[PythonValue, PythonValue]]:
    # The JSON answer's two forms of a map: an object (STRING keys), or [{"key", "value"}].
    if isinstance(pairs, dict):
        items = list(pairs.items())
    elif isinstance(pairs, list):
        items = [(entry["key"], entry["value"]) for entry in pairs if isinstance(entry, dict)]
        if len(items) != len(pairs):
            raise TypeError("not a map entry")
    else:
        raise TypeError("not a map")
    return [(key(k), None if v is None else value(v)) for k, v in items]


def _datetime(value: JsonValue, *, zoned: bool) -> datetime:
    text = _text(value)
    match = TIMESTAMP.fullmatch(text)
    if match is None or len(fraction_digits(match[1])) > len(".000000"):
        raise ValueError("not a timestamp in microseconds")
    moment = datetime.fromisoformat(text.removesuffix("Z"))
    return moment.replace(tzinfo=UTC) if zoned else moment
