"""The normalizer: every type_name's JSON form, from JSON_ARRAY strings and from Arrow alike."""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from dbx_backend.engine import normalize
from dbx_backend.engine.normalize import (
    Column,
    JsonValue,
    NormalizeOptions,
    RowConverter,
    columns_from_manifest,
)
from dbx_backend.warehouse.errors import ProtocolError
from dbx_backend.warehouse.wire import ResultManifest

LONG_AS_STRING = NormalizeOptions(long_as_string=True)
HEX_BINARY = NormalizeOptions(binary_input="hex")


def as_json(value: JsonValue) -> str:
    """JSON text, so that -0.0 differs from 0.0 and True from 1 in assertions."""
    return json.dumps(value, ensure_ascii=False)


def column(type_: str, *, scale: int | None = None, name: str = "c", position: int = 0) -> Column:
    """A column of the type `type_`, a type name or a whole type text such as `ARRAY<INT>`."""
    return Column(name, type_.partition("<")[0], type_, position, scale=scale)


def convert_cell(
    type_: str, cell: str | None, *, scale: int | None = None, options: NormalizeOptions
) -> JsonValue:
    return RowConverter([column(type_, scale=scale)], options).convert_rows([[cell]])[0][0]


DEFAULT = NormalizeOptions()

CELLS = [
    pytest.param("BYTE", "-128", None, DEFAULT, -128, id="byte"),
    pytest.param("SHORT", "32767", None, DEFAULT, 32767, id="short"),
    pytest.param("INT", "-2147483648", None, DEFAULT, -2147483648, id="int"),
    pytest.param("LONG", "9223372036854775807", None, DEFAULT, 9223372036854775807, id="long-max"),
    pytest.param(
        "LONG", "-9223372036854775808", None, DEFAULT, -9223372036854775808, id="long-min"
    ),
    pytest.param(
        "LONG",
        "9223372036854775807",
        None,
        LONG_AS_STRING,
        "9223372036854775807",
        id="long-as-string",
    ),
    pytest.param("INT", "7", None, LONG_AS_STRING, 7, id="long-as-string-leaves-int-a-number"),
    pytest.param("DOUBLE", "1.5", None, DEFAULT, 1.5, id="double"),
    pytest.param("DOUBLE", "-0.0", None, DEFAULT, -0.0, id="double-negative-zero"),
    pytest.param(
        "DOUBLE", "1.7976931348623157E308", None, DEFAULT, 1.7976931348623157e308, id="double-max"
    ),
    pytest.param("DOUBLE", "NaN", None, DEFAULT, "NaN", id="double-nan"),
    pytest.param("DOUBLE", "Infinity", None, DEFAULT, "Infinity", id="double-infinity"),
    pytest.param("DOUBLE", "+Infinity", None, DEFAULT, "Infinity", id="double-plus-infinity"),
    pytest.param("DOUBLE", "-Infinity", None, DEFAULT, "-Infinity", id="double-minus-infinity"),
    pytest.param("DOUBLE", "inf", None, DEFAULT, "Infinity", id="double-inf"),
    pytest.param("DOUBLE", "-inf", None, DEFAULT, "-Infinity", id="double-minus-inf"),
    pytest.param("FLOAT", "0.1", None, DEFAULT, 0.1, id="float"),
    pytest.param("FLOAT", "-0.0", None, DEFAULT, -0.0, id="float-negative-zero"),
    pytest.param(
        "DECIMAL",
        "12345678901234567890.123456789012345678",
        18,
        DEFAULT,
        "12345678901234567890.123456789012345678",
        id="decimal-38-18-exact",
    ),
    pytest.param("DECIMAL", "1.5", 2, DEFAULT, "1.50", id="decimal-padded-to-scale"),
    pytest.param("DECIMAL", "7", 3, DEFAULT, "7.000", id="decimal-integer-padded"),
    pytest.param("DECIMAL", "1.50", 2, DEFAULT, "1.50", id="decimal-keeps-its-scale"),
    pytest.param("DECIMAL", "-0.05", 2, DEFAULT, "-0.05", id="decimal-negative"),
    pytest.param("DECIMAL", "42", 0, DEFAULT, "42", id="decimal-scale-0"),
    pytest.param("DECIMAL", "1.5E+2", 2, DEFAULT, "150.00", id="decimal-exponent-rendered-plain"),
    pytest.param(
        "DECIMAL", "1E-20", 20, DEFAULT, "0.00000000000000000001", id="decimal-tiny-exponent"
    ),
    pytest.param("DECIMAL", "0E-18", 18, DEFAULT, "0.000000000000000000", id="decimal-zero-e"),
    pytest.param("DECIMAL", "1.505", 2, DEFAULT, "1.505", id="decimal-extra-digits-not-rounded"),
    pytest.param("BOOLEAN", "true", None, DEFAULT, True, id="boolean-true"),
    pytest.param("BOOLEAN", "false", None, DEFAULT, False, id="boolean-false"),
    pytest.param("BOOLEAN", "TRUE", None, DEFAULT, True, id="boolean-upper-case"),
    pytest.param("DATE", "2024-02-29", None, DEFAULT, "2024-02-29", id="date"),
    pytest.param("DATE", "1969-07-20", None, DEFAULT, "1969-07-20", id="date-before-1970"),
    pytest.param("DATE", "0999-01-01", None, DEFAULT, "0999-01-01", id="date-year-below-1000"),
    pytest.param(
        "TIMESTAMP", "2024-01-15T09:30:00Z", None, DEFAULT, "2024-01-15T09:30:00.000Z", id="ts-z"
    ),
    pytest.param(
        "TIMESTAMP",
        "2024-01-15 09:30:00.123",
        None,
        DEFAULT,
        "2024-01-15T09:30:00.123Z",
        id="ts-space-no-offset-is-utc",
    ),
    pytest.param(
        "TIMESTAMP",
        "2024-01-15T15:00:00.5+05:30",
        None,
        DEFAULT,
        "2024-01-15T09:30:00.500Z",
        id="ts-offset-applied",
    ),
    pytest.param(
        "TIMESTAMP",
        "2024-01-15T15:00:00+0530",
        None,
        DEFAULT,
        "2024-01-15T09:30:00.000Z",
        id="ts-offset-without-colon",
    ),
    pytest.param(
        "TIMESTAMP",
        "2023-12-31T20:00:00.000000001-08:00",
        None,
        DEFAULT,
        "2024-01-01T04:00:00.000000001Z",
        id="ts-offset-crosses-year-keeps-nanoseconds",
    ),
    pytest.param(
        "TIMESTAMP",
        "1969-12-31 23:59:59.999999999+00:00",
        None,
        DEFAULT,
        "1969-12-31T23:59:59.999999999Z",
        id="ts-before-1970",
    ),
    pytest.param(
        "TIMESTAMP",
        "0001-01-01T00:00:00Z",
        None,
        DEFAULT,
        "0001-01-01T00:00:00.000Z",
        id="ts-year-1",
    ),
    pytest.param(
        "TIMESTAMP_NTZ",
        "2023-03-15T12:34:56",
        None,
        DEFAULT,
        "2023-03-15T12:34:56.000",
        id="ntz",
    ),
    pytest.param(
        "TIMESTAMP_NTZ",
        "2023-03-15 12:34:56.123456789",
        None,
        DEFAULT,
        "2023-03-15T12:34:56.123456789",
        id="ntz-space-nanoseconds",
    ),
    pytest.param(
        "TIMESTAMP_NTZ",
        "2023-03-15T12:34:56+05:30",
        None,
        DEFAULT,
        "2023-03-15T12:34:56.000",
        id="ntz-offset-ignored-not-applied",
    ),
    pytest.param("BINARY", "SGVsbG8=", None, DEFAULT, "SGVsbG8=", id="binary-base64"),
    pytest.param("BINARY", "", None, DEFAULT, "", id="binary-empty"),
    pytest.param("BINARY", "48656C6C6F", None, HEX_BINARY, "SGVsbG8=", id="binary-hex-input"),
    pytest.param("BINARY", "48656c6c6f", None, HEX_BINARY, "SGVsbG8=", id="binary-hex-lower"),
    pytest.param("ARRAY", "[1,2,3]", None, DEFAULT, [1, 2, 3], id="array"),
    pytest.param(
        "ARRAY",
        '[{"a":1,"b":"x"},{"a":null,"b":"ü"}]',
        None,
        DEFAULT,
        [{"a": 1, "b": "x"}, {"a": None, "b": "ü"}],
        id="array-of-struct",
    ),
    pytest.param(
        "ARRAY",
        "[9223372036854775807,-9223372036854775808]",
        None,
        DEFAULT,
        [9223372036854775807, -9223372036854775808],
        id="array-of-long-exact",
    ),
    pytest.param(
        "ARRAY",
        "[123456789012345678901234567890]",
        None,
        DEFAULT,
        [123456789012345678901234567890],
        id="array-big-integer-exact",
    ),
    pytest.param(
        "ARRAY",
        "[1.5,NaN,Infinity,-Infinity]",
        None,
        DEFAULT,
        [1.5, "NaN", "Infinity", "-Infinity"],
        id="array-non-finite-literals",
    ),
    pytest.param("MAP", '{"k":1,"z":null}', None, DEFAULT, {"k": 1, "z": None}, id="map"),
    pytest.param(
        "MAP",
        '[{"key":1,"value":"a"}]',
        None,
        DEFAULT,
        [{"key": 1, "value": "a"}],
        id="map-key-value-form",
    ),
    pytest.param(
        "STRUCT",
        '{"a":{"b":[true,null]},"c":"d"}',
        None,
        DEFAULT,
        {"a": {"b": [True, None]}, "c": "d"},
        id="struct-nested",
    ),
    pytest.param("VARIANT", '"text"', None, DEFAULT, "text", id="variant-string"),
    pytest.param(
        "VARIANT",
        '{"n":12345678901234567890123}',
        None,
        DEFAULT,
        {"n": 12345678901234567890123},
        id="variant-big-integer",
    ),
    pytest.param("INTERVAL", "1-6", None, DEFAULT, "1-6", id="interval-year-month"),
    pytest.param(
        "INTERVAL", "1 02:03:04.000000000", None, DEFAULT, "1 02:03:04.000000000", id="interval"
    ),
    pytest.param("STRING", "", None, DEFAULT, "", id="string-empty-stays-empty"),
    pytest.param("STRING", "héllo wörld 🌍 ✓", None, DEFAULT, "héllo wörld 🌍 ✓", id="unicode"),
    pytest.param("STRING", "null", None, DEFAULT, "null", id="string-null-text"),
    pytest.param("CHAR", "ab ", None, DEFAULT, "ab ", id="char"),
    pytest.param("GEOMETRY", "POINT(1 2)", None, DEFAULT, "POINT(1 2)", id="geometry"),
    pytest.param("GEOGRAPHY", "POINT(1 2)", None, DEFAULT, "POINT(1 2)", id="geography"),
    pytest.param("USER_DEFINED_TYPE", "x", None, DEFAULT, "x", id="user-defined-type"),
    pytest.param("FANCY_NEW_TYPE", "42", None, DEFAULT, "42", id="unknown-type-as-text"),
    pytest.param("NULL", "anything", None, DEFAULT, None, id="null-type"),
]


@pytest.mark.parametrize(("type_", "cell", "scale", "options", "expected"), CELLS)
def test_cell_becomes_its_json_form(
    type_: str, cell: str, scale: int | None, options: NormalizeOptions, expected: JsonValue
) -> None:
    result = convert_cell(type_, cell, scale=scale, options=options)

    assert as_json(result) == as_json(expected)


FRACTIONS = [
    pytest.param("", ".000", id="0-digits"),
    pytest.param(".1", ".100", id="1-digit"),
    pytest.param(".12", ".120", id="2-digits"),
    pytest.param(".123", ".123", id="3-digits"),
    pytest.param(".1234", ".123400", id="4-digits"),
    pytest.param(".12345", ".123450", id="5-digits"),
    pytest.param(".123456", ".123456", id="6-digits"),
    pytest.param(".1234567", ".123456700", id="7-digits"),
    pytest.param(".12345678", ".123456780", id="8-digits"),
    pytest.param(".123456789", ".123456789", id="9-digits"),
    pytest.param(".000", ".000", id="zero-milliseconds"),
    pytest.param(".120000", ".120", id="microseconds-of-zero"),
    pytest.param(".000001000", ".000001", id="nanoseconds-of-zero"),
    pytest.param(".000000000", ".000", id="nine-zeros"),
]


@pytest.mark.parametrize(("sent", "rendered"), FRACTIONS)
def test_timestamp_fraction_has_3_6_or_9_digits_and_loses_none(sent: str, rendered: str) -> None:
    result = convert_cell("TIMESTAMP", f"2024-01-15T09:30:00{sent}", options=DEFAULT)

    assert result == f"2024-01-15T09:30:00{rendered}Z"


ALL_TYPES = [
    "BYTE", "SHORT", "INT", "LONG", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN", "DATE", "TIMESTAMP",
    "TIMESTAMP_NTZ", "BINARY", "ARRAY", "MAP", "STRUCT", "VARIANT", "INTERVAL", "STRING", "CHAR",
    "GEOMETRY", "GEOGRAPHY", "USER_DEFINED_TYPE", "NULL", "FANCY_NEW_TYPE",
]  # fmt: skip


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_sql_null_is_null_for_every_type(type_: str) -> None:
    assert convert_cell(type_, None, scale=2, options=LONG_AS_STRING) is None


BAD_CELLS = [
    pytest.param("INT", "12x-SECRET", DEFAULT, id="int-not-digits"),
    pytest.param("LONG", "1.5", DEFAULT, id="long-fraction"),
    pytest.param("LONG", "SECRET", LONG_AS_STRING, id="long-as-string-not-digits"),
    pytest.param("DOUBLE", "SECRET", DEFAULT, id="double-text"),
    pytest.param("DECIMAL", "SECRET", DEFAULT, id="decimal-text"),
    pytest.param("DECIMAL", "NaN", DEFAULT, id="decimal-nan"),
    pytest.param("BOOLEAN", "yes-SECRET", DEFAULT, id="boolean-yes"),
    pytest.param("DATE", "2024-02-30", DEFAULT, id="date-no-such-day"),
    pytest.param("TIMESTAMP", "2024-01-15T25:00:00", DEFAULT, id="timestamp-hour-25"),
    pytest.param("TIMESTAMP", "2024-01-15", DEFAULT, id="timestamp-date-only"),
    pytest.param("TIMESTAMP", "2024-01-15T09:30:00.1234567891", DEFAULT, id="timestamp-10-digits"),
    pytest.param("TIMESTAMP", "2024-01-15T09:30:00+25:00", DEFAULT, id="timestamp-bad-offset"),
    pytest.param("TIMESTAMP_NTZ", "SECRET", DEFAULT, id="ntz-text"),
    pytest.param("BINARY", "SECRET!!", DEFAULT, id="binary-not-base64"),
    pytest.param("BINARY", "SECRETzz", HEX_BINARY, id="binary-not-hex"),
    pytest.param("ARRAY", "[1, SECRET", DEFAULT, id="array-bad-json"),
    pytest.param("VARIANT", "{SECRET: 12345678901234567890}", DEFAULT, id="variant-bad-json"),
]


@pytest.mark.parametrize(("type_", "cell", "options"), BAD_CELLS)
def test_a_bad_cell_is_a_protocol_error_that_hides_the_value(
    type_: str, cell: str, options: NormalizeOptions
) -> None:
    converter = RowConverter(
        [column("INT", name="ok"), column(type_, name="amount", position=1)], options
    )

    with pytest.raises(ProtocolError) as caught:
        converter.convert_rows([["1", "1.50"], ["2", cell]])

    message = str(caught.value)
    assert "SECRET" not in message
    assert cell not in message
    assert "'amount'" in message
    assert type_ in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_a_row_with_the_wrong_number_of_cells_is_a_protocol_error() -> None:
    converter = RowConverter([column("INT"), column("STRING", position=1)])

    with pytest.raises(ProtocolError, match=r"row 1 .* 3 cells"):
        converter.convert_rows([["1", "a"], ["2", "b", "SECRET"]])


def test_rows_keep_their_order_and_columns_their_positions() -> None:
    converter = RowConverter([column("INT"), column("STRING", position=1), column("BOOLEAN")])
    data: list[list[str | None]] = [["1", "a", "true"], [None, "", None], ["3", None, "false"]]

    rows = converter.convert_rows(iter(data))

    assert rows == [[1, "a", True], [None, "", None], [3, None, False]]


def test_an_empty_chunk_gives_no_rows() -> None:
    assert RowConverter([column("INT")]).convert_rows([]) == []


def test_a_result_without_columns_keeps_its_row_count() -> None:
    assert RowConverter([]).convert_rows([[], []]) == [[], []]


# ---- columns_from_manifest ----------------------------------------------------------------


def manifest(*columns: dict[str, Any]) -> ResultManifest:
    return ResultManifest.model_validate(
        {"format": "JSON_ARRAY", "schema": {"column_count": len(columns), "columns": columns}}
    )


MANIFEST_COLUMNS = [
    pytest.param(
        {"name": "id", "position": 0, "type_name": "LONG", "type_text": "BIGINT"},
        Column("id", "LONG", "BIGINT", 0),
        id="type-name-kept",
    ),
    pytest.param(
        {"name": "t", "position": 1, "type_name": "timestamp_ntz", "type_text": "timestamp_ntz"},
        Column("t", "TIMESTAMP_NTZ", "timestamp_ntz", 1),
        id="type-name-upper-cased",
    ),
    pytest.param(
        {"name": "t", "position": 2, "type_text": "TIMESTAMP_NTZ"},
        Column("t", "TIMESTAMP_NTZ", "TIMESTAMP_NTZ", 2),
        id="ntz-from-type-text",
    ),
    pytest.param(
        {"name": "v", "type_text": "VARIANT"}, Column("v", "VARIANT", "VARIANT", 0), id="variant"
    ),
    pytest.param(
        {"name": "g", "type_text": "GEOMETRY(4326)"},
        Column("g", "GEOMETRY", "GEOMETRY(4326)", 0),
        id="geometry-srid-dropped",
    ),
    pytest.param(
        {"name": "a", "type_text": "array<struct<a:int,b:string>>"},
        Column("a", "ARRAY", "array<struct<a:int,b:string>>", 0),
        id="array-from-type-text",
    ),
    pytest.param(
        {"name": "n", "type_text": "bigint"}, Column("n", "LONG", "bigint", 0), id="sql-alias"
    ),
    pytest.param(
        {"name": "i", "type_text": "INTERVAL DAY TO SECOND"},
        Column("i", "INTERVAL", "INTERVAL DAY TO SECOND", 0),
        id="interval-from-type-text",
    ),
    pytest.param(
        {
            "name": "price",
            "position": 3,
            "type_name": "DECIMAL",
            "type_text": "DECIMAL(38,18)",
            "type_precision": 38,
            "type_scale": 18,
        },
        Column("price", "DECIMAL", "DECIMAL(38,18)", 3, precision=38, scale=18),
        id="decimal-precision-scale",
    ),
    pytest.param(
        {"name": "d", "type_text": "decimal(10, 2)"},
        Column("d", "DECIMAL", "decimal(10, 2)", 0, precision=10, scale=2),
        id="decimal-params-from-type-text",
    ),
    pytest.param(
        {
            "name": "x",
            "type_name": "INT",
            "type_text": "INT",
            "type_precision": 10,
            "type_scale": 0,
        },
        Column("x", "INT", "INT", 0),
        id="precision-only-for-decimal",
    ),
    pytest.param({"name": "x"}, Column("x", "UNKNOWN", "", 0), id="no-type-at-all"),
]


@pytest.mark.parametrize(("info", "expected"), MANIFEST_COLUMNS)
def test_columns_from_manifest(info: dict[str, Any], expected: Column) -> None:
    assert columns_from_manifest(manifest(info), DEFAULT) == [expected]


def test_nullable_is_unknown_because_the_api_never_says() -> None:
    (col,) = columns_from_manifest(
        manifest({"name": "x", "type_name": "INT", "type_text": "INT"}), DEFAULT
    )

    assert col.to_json()["nullable"] is None
    assert "precision" not in col.to_json()


def test_type_derived_from_type_text_decides_the_value() -> None:
    columns = columns_from_manifest(
        manifest({"name": "d", "type_text": "DECIMAL(10,2)"}, {"name": "n", "type_text": "BIGINT"}),
        LONG_AS_STRING,
    )

    rows = RowConverter(columns, LONG_AS_STRING).convert_rows([["1.5", "9007199254740993"]])

    assert rows == [["1.50", "9007199254740993"]]


# ---- Arrow and JSON_ARRAY give the same values ----------------------------------------------

US_UTC = pa.timestamp("us", tz="UTC")
ARRAY_OF_STRUCT = pa.list_(pa.struct([("a", pa.int32()), ("b", pa.string())]))
STRUCT_NESTED = pa.struct(
    [("d", pa.decimal128(4, 2)), ("xs", pa.list_(pa.float64())), ("day", pa.date32())]
)

# (column type, scale, options, Arrow values, Arrow type, JSON_ARRAY cells, expected)
PARITY = [
    pytest.param(
        "LONG", None, DEFAULT,
        [9223372036854775807, -9223372036854775808, 0, None], pa.int64(),
        ["9223372036854775807", "-9223372036854775808", "0", None],
        [9223372036854775807, -9223372036854775808, 0, None],
        id="long",
    ),
    pytest.param(
        "LONG", None, LONG_AS_STRING,
        [9223372036854775807, None], pa.int64(), ["9223372036854775807", None],
        ["9223372036854775807", None],
        id="long-as-string",
    ),
    pytest.param("INT", None, DEFAULT, [-5, None], pa.int32(), ["-5", None], [-5, None], id="int"),
    pytest.param(
        "DOUBLE", None, DEFAULT,
        [1.5, -0.0, float("nan"), float("inf"), float("-inf"), None], pa.float64(),
        ["1.5", "-0.0", "NaN", "Infinity", "-Infinity", None],
        [1.5, -0.0, "NaN", "Infinity", "-Infinity", None],
        id="double",
    ),
    pytest.param(
        "FLOAT", None, DEFAULT,
        [0.1, -0.0, float("nan"), None], pa.float32(), ["0.1", "-0.0", "NaN", None],
        [0.1, -0.0, "NaN", None],
        id="float32",
    ),
    pytest.param(
        "DECIMAL", 18, DEFAULT,
        [Decimal("12345678901234567890.123456789012345678"), Decimal("1.5"), Decimal(0), None],
        pa.decimal128(38, 18),
        ["12345678901234567890.123456789012345678", "1.500000000000000000",
         "0.000000000000000000", None],
        ["12345678901234567890.123456789012345678", "1.500000000000000000",
         "0.000000000000000000", None],
        id="decimal-38-18",
    ),
    pytest.param(
        "DECIMAL", 2, DEFAULT,
        [Decimal("1.5"), Decimal("-0.05"), None], pa.decimal128(10, 2), ["1.5", "-0.05", None],
        ["1.50", "-0.05", None],
        id="decimal-scale-padded",
    ),
    pytest.param(
        "DECIMAL", 3, DEFAULT,
        [Decimal("1.5"), Decimal("-0.1"), None], pa.decimal128(10, 1),
        ["1.5", "-0.1", None], ["1.500", "-0.100", None],
        id="decimal-arrow-scale-below-the-columns",
    ),
    pytest.param(
        "DECIMAL", 10, DEFAULT,
        [Decimal("0.0000001"), Decimal("12.5"), None], pa.decimal128(38, 10),
        ["0.0000001000", "12.5000000000", None], ["0.0000001000", "12.5000000000", None],
        id="decimal-tiny-value-rendered-plain",
    ),
    pytest.param(
        "DECIMAL", 6, DEFAULT,
        [Decimal("0.000001"), Decimal(0), Decimal("-0.000010"), None], pa.decimal128(38, 6),
        ["0.000001", "0.000000", "-0.000010", None], ["0.000001", "0.000000", "-0.000010", None],
        id="decimal-scale-6-never-e-notation",
    ),
    pytest.param(
        "DECIMAL", 7, DEFAULT,
        [Decimal("0.0000001"), Decimal(0), None], pa.decimal128(38, 7),
        ["0.0000001", "0.0000000", None], ["0.0000001", "0.0000000", None],
        id="decimal-scale-7-e-notation-rendered-plain",
    ),
    pytest.param(
        "DOUBLE", None, DEFAULT, [None, None], pa.float64(), [None, None], [None, None],
        id="double-all-null",
    ),
    pytest.param(
        "BOOLEAN", None, DEFAULT,
        [True, False, None], pa.bool_(), ["true", "false", None], [True, False, None],
        id="boolean",
    ),
    pytest.param(
        "DATE", None, DEFAULT,
        [date(1969, 7, 20), date(999, 1, 1), date(9999, 12, 31), None], pa.date32(),
        ["1969-07-20", "0999-01-01", "9999-12-31", None],
        ["1969-07-20", "0999-01-01", "9999-12-31", None],
        id="date",
    ),
    pytest.param(
        "TIMESTAMP", None, DEFAULT,
        [datetime(2024, 1, 15, 9, 30, 0, 123000, UTC), datetime(1969, 12, 31, 23, 59, 59, 0, UTC),
         None],
        US_UTC,
        ["2024-01-15T09:30:00.123Z", "1969-12-31 23:59:59", None],
        ["2024-01-15T09:30:00.123Z", "1969-12-31T23:59:59.000Z", None],
        id="timestamp-utc",
    ),
    pytest.param(
        "TIMESTAMP", None, DEFAULT,
        [1705311000123456789, None], pa.timestamp("ns", tz="+05:30"),
        ["2024-01-15T15:00:00.123456789+05:30", None],
        ["2024-01-15T09:30:00.123456789Z", None],
        id="timestamp-offset-nanoseconds",
    ),
    pytest.param(
        "TIMESTAMP", None, DEFAULT,
        [1705311000120000000, 1705311000000001000, 1705311000000000000, None],
        pa.timestamp("ns", tz="UTC"),
        ["2024-01-15T09:30:00.120Z", "2024-01-15T09:30:00.000001Z", "2024-01-15T09:30:00.000Z",
         None],
        ["2024-01-15T09:30:00.120Z", "2024-01-15T09:30:00.000001Z", "2024-01-15T09:30:00.000Z",
         None],
        id="timestamp-nanosecond-unit-drops-zero-groups",
    ),
    pytest.param(
        "TIMESTAMP", None, DEFAULT,
        [1705311000007, None], pa.timestamp("ms"), ["2024-01-15 09:30:00.007", None],
        ["2024-01-15T09:30:00.007Z", None],
        id="timestamp-millisecond-unit",
    ),
    pytest.param(
        "STRUCT<t:TIMESTAMP>", None, DEFAULT,
        [{"t": datetime(2024, 1, 15, 9, 30, 0, 500, UTC)},
         {"t": datetime(2024, 1, 15, tzinfo=UTC)}],
        pa.struct([("t", US_UTC)]),
        ['{"t":"2024-01-15T09:30:00.000500Z"}', '{"t":"2024-01-15T00:00:00.000Z"}'],
        [{"t": "2024-01-15T09:30:00.000500Z"}, {"t": "2024-01-15T00:00:00.000Z"}],
        id="struct-with-timestamp-in-the-same-form",
    ),
    pytest.param(
        "TIMESTAMP", None, DEFAULT,
        [1705311000, None], pa.timestamp("s"), ["2024-01-15 09:30:00", None],
        ["2024-01-15T09:30:00.000Z", None],
        id="timestamp-naive-is-utc",
    ),
    pytest.param(
        "TIMESTAMP_NTZ", None, DEFAULT,
        [datetime(2023, 3, 15, 12, 34, 56, 500000), datetime(1, 1, 1), None], pa.timestamp("us"),
        ["2023-03-15T12:34:56.5000", "0001-01-01 00:00:00", None],
        ["2023-03-15T12:34:56.500", "0001-01-01T00:00:00.000", None],
        id="timestamp-ntz",
    ),
    pytest.param(
        "STRING", None, DEFAULT,
        ["", "héllo 🌍", None], pa.string(), ["", "héllo 🌍", None], ["", "héllo 🌍", None],
        id="string",
    ),
    pytest.param(
        "STRING", None, DEFAULT,
        ["", "ü", None], pa.large_string(), ["", "ü", None], ["", "ü", None], id="large-string",
    ),
    pytest.param(
        "CHAR", None, DEFAULT,
        ["ab", None], pa.string_view(), ["ab", None], ["ab", None], id="string-view",
    ),
    pytest.param(
        "BINARY", None, DEFAULT,
        [b"Hello", b"", b"\x00\xff", None], pa.binary(), ["SGVsbG8=", "", "AP8=", None],
        ["SGVsbG8=", "", "AP8=", None],
        id="binary",
    ),
    pytest.param(
        "ARRAY<STRUCT<a:INT,b:STRING>>", None, DEFAULT,
        [[{"a": 1, "b": "x"}, {"a": None, "b": "ü"}], [], None], ARRAY_OF_STRUCT,
        ['[{"a":1,"b":"x"},{"a":null,"b":"ü"}]', "[]", None],
        [[{"a": 1, "b": "x"}, {"a": None, "b": "ü"}], [], None],
        id="array-of-struct",
    ),
    pytest.param(
        "MAP<STRING,BIGINT>", None, DEFAULT,
        [[("k", 1), ("z", None)], [], None], pa.map_(pa.string(), pa.int64()),
        ['{"k":1,"z":null}', "{}", None],
        [{"k": 1, "z": None}, {}, None],
        id="map-string-keys",
    ),
    pytest.param(
        "MAP<INT,STRING>", None, DEFAULT,
        [[(1, "a")], None], pa.map_(pa.int32(), pa.string()),
        ['[{"key":1,"value":"a"}]', None],
        [[{"key": 1, "value": "a"}], None],
        id="map-other-keys",
    ),
    pytest.param(
        "STRUCT<d:DECIMAL(4,2),xs:ARRAY<DOUBLE>,day:DATE>", None, DEFAULT,
        [{"d": Decimal("1.50"), "xs": [1.0, float("nan")], "day": date(1960, 1, 2)}, None],
        STRUCT_NESTED,
        ['{"d":1.50,"xs":[1.0,NaN],"day":"1960-01-02"}', None],
        [{"d": "1.50", "xs": [1.0, "NaN"], "day": "1960-01-02"}, None],
        id="struct-nested",
    ),
    pytest.param(
        "VARIANT", None, DEFAULT,
        ['{"a":[1,2]}', None], pa.string(), ['{"a":[1,2]}', None], [{"a": [1, 2]}, None],
        id="variant-as-text",
    ),
    pytest.param(
        "INTERVAL", None, DEFAULT,
        ["1-6", None], pa.string(), ["1-6", None], ["1-6", None],
        id="interval-as-text",
    ),
    # The local warehouse sends INTERVAL as Arrow's month_day_nano: written as its JSON_ARRAY
    # text of the same value, never as pyarrow's repr.
    pytest.param(
        "INTERVAL", None, DEFAULT,
        [pa.MonthDayNano([0, 3, 0]), pa.MonthDayNano([14, 3, 14_706_500_000_000]),
         pa.MonthDayNano([0, 0, -5_400_000_000_000]), pa.MonthDayNano([-13, -1, -1000]),
         pa.MonthDayNano([0, 0, 90_000_000_000_000]), pa.MonthDayNano([0, 0, 0]), None],
        pa.month_day_nano_interval(),
        ["3 days", "1 year 2 months 3 days 04:05:06.5", "-01:30:00",
         "-1 year -1 month -1 day -00:00:00.000001", "25:00:00", "00:00:00", None],
        ["3 days", "1 year 2 months 3 days 04:05:06.5", "-01:30:00",
         "-1 year -1 month -1 day -00:00:00.000001", "25:00:00", "00:00:00", None],
        id="interval-from-arrow-month-day-nano",
    ),
    pytest.param(
        "ARRAY<INTERVAL>", None, DEFAULT,
        [[pa.MonthDayNano([1, 0, 0]), None], None], pa.list_(pa.month_day_nano_interval()),
        ['["1 month",null]', None], [["1 month", None], None],
        id="nested-interval-from-arrow",
    ),
    pytest.param(
        "NULL", None, DEFAULT, [None, None], pa.null(), [None, None], [None, None], id="null"
    ),
    # ---- one value rule at every depth: a part of a nested value is written as its type is
    # at the top of a row, whatever form the JSON text gave it.
    pytest.param(
        "STRUCT<id:BIGINT,price:DECIMAL(10,2)>", None, DEFAULT,
        [{"id": 9007199254740993, "price": Decimal("1.10")}, None],
        pa.struct([("id", pa.int64()), ("price", pa.decimal128(10, 2))]),
        ['{"id":9007199254740993,"price":1.10}', None],
        [{"id": 9007199254740993, "price": "1.10"}, None],
        id="nested-long-exact-and-decimal-keeps-its-scale",
    ),
    pytest.param(
        "STRUCT<id:BIGINT,price:DECIMAL(10,2)>", None, LONG_AS_STRING,
        [{"id": 9007199254740993, "price": Decimal("1.1")}],
        pa.struct([("id", pa.int64()), ("price", pa.decimal128(10, 2))]),
        ['{"id":9007199254740993,"price":1.1}'],
        [{"id": "9007199254740993", "price": "1.10"}],
        id="nested-long-as-string",
    ),
    pytest.param(
        "ARRAY<DECIMAL(38,18)>", None, DEFAULT,
        [[Decimal("12345678901234567890.123456789012345678"), None, Decimal("-0.5")]],
        pa.list_(pa.decimal128(38, 18)),
        ["[12345678901234567890.123456789012345678,null,-0.5]"],
        [["12345678901234567890.123456789012345678", None, "-0.500000000000000000"]],
        id="array-of-decimal-38-18-exact",
    ),
    pytest.param(
        "ARRAY<ARRAY<BIGINT>>", None, LONG_AS_STRING,
        [[[1, -9223372036854775808], []], []], pa.list_(pa.list_(pa.int64())),
        ["[[1,-9223372036854775808],[]]", "[]"],
        [[["1", "-9223372036854775808"], []], []],
        id="array-of-array-of-long-as-string",
    ),
    pytest.param(
        "MAP<STRING,DECIMAL(5,1)>", None, DEFAULT,
        [[("a", Decimal("2.0")), ("b", None)]], pa.map_(pa.string(), pa.decimal128(5, 1)),
        ['{"a":2,"b":null}'],
        [{"a": "2.0", "b": None}],
        id="map-string-keys-decimal-values",
    ),
    pytest.param(
        "MAP<INT,DECIMAL(4,2)>", None, DEFAULT,
        [[(1, Decimal("1.5")), (2, None)]], pa.map_(pa.int32(), pa.decimal128(4, 2)),
        ['{"1":1.5,"2":null}'],
        [[{"key": 1, "value": "1.50"}, {"key": 2, "value": None}]],
        id="map-other-keys-from-a-json-object",
    ),
    pytest.param(
        "MAP<BIGINT,STRING>", None, LONG_AS_STRING,
        [[(9007199254740993, "x")]], pa.map_(pa.int64(), pa.string()),
        ['[{"key":9007199254740993,"value":"x"}]'],
        [[{"key": "9007199254740993", "value": "x"}]],
        id="map-long-keys-as-string",
    ),
    pytest.param(
        "STRUCT<a:INT,b:STRING,c:ARRAY<INT>>", None, DEFAULT,
        [{"a": 1, "b": None, "c": None}],
        pa.struct([("a", pa.int32()), ("b", pa.string()), ("c", pa.list_(pa.int32()))]),
        ['{"a":1}'],
        [{"a": 1, "b": None, "c": None}],
        id="struct-fields-left-out-of-the-text-are-null",
    ),
    pytest.param(
        "ARRAY<TIMESTAMP>", None, DEFAULT,
        [[datetime(2024, 1, 15, 9, 30, 0, 500000, UTC), datetime(2024, 1, 15, tzinfo=UTC)]],
        pa.list_(US_UTC),
        ['["2024-01-15 09:30:00.5+00","2024-01-15T00:00:00Z"]'],
        [["2024-01-15T09:30:00.500Z", "2024-01-15T00:00:00.000Z"]],
        id="array-of-timestamp",
    ),
    pytest.param(
        "ARRAY<TIMESTAMP_NTZ>", None, DEFAULT,
        [[datetime(2024, 1, 15, 9, 30, 0, 500)]], pa.list_(pa.timestamp("us")),
        ['["2024-01-15 09:30:00.0005"]'],
        [["2024-01-15T09:30:00.000500"]],
        id="array-of-timestamp-ntz",
    ),
    pytest.param(
        "STRUCT<day:DATE,ok:BOOLEAN,raw:BINARY>", None, DEFAULT,
        [{"day": date(999, 1, 2), "ok": False, "raw": b"\x00\xff"}],
        pa.struct([("day", pa.date32()), ("ok", pa.bool_()), ("raw", pa.binary())]),
        ['{"day":"0999-01-02","ok":false,"raw":"AP8="}'],
        [{"day": "0999-01-02", "ok": False, "raw": "AP8="}],
        id="struct-of-date-boolean-binary",
    ),
    pytest.param(
        "ARRAY<FLOAT>", None, DEFAULT,
        [[0.1, float("nan"), -2.5]], pa.list_(pa.float32()),
        ["[0.10000000149011612,NaN,-2.5]"],
        [[0.1, "NaN", -2.5]],
        id="array-of-float32-shortest-form",
    ),
    pytest.param(
        "ARRAY<DOUBLE>", None, DEFAULT,
        [[1.0, 2.5, float("-inf")]], pa.list_(pa.float64()),
        ['[1,2.5,"-Infinity"]'],
        [[1.0, 2.5, "-Infinity"]],
        id="array-of-double-integral-and-infinite",
    ),
    pytest.param(
        "STRUCT<`order id`:BIGINT,inner:STRUCT<xs:ARRAY<BIGINT>,m:MAP<STRING,BIGINT>>>", None,
        LONG_AS_STRING,
        [{"order id": 2**62, "inner": {"xs": [2**53 + 1], "m": [("k", -(2**60))]}}],
        pa.struct([
            ("order id", pa.int64()),
            ("inner", pa.struct([
                ("xs", pa.list_(pa.int64())), ("m", pa.map_(pa.string(), pa.int64()))
            ])),
        ]),
        ['{"order id":4611686018427387904,"inner":{"xs":[9007199254740993],'
         '"m":{"k":-1152921504606846976}}}'],
        [{"order id": "4611686018427387904",
          "inner": {"xs": ["9007199254740993"], "m": {"k": "-1152921504606846976"}}}],
        id="deeply-nested-longs-as-string",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("type_", "scale", "options", "values", "arrow_type", "cells", "expected"), PARITY
)
def test_arrow_and_json_array_give_the_same_values(
    type_: str,
    scale: int | None,
    options: NormalizeOptions,
    values: list[Any],
    arrow_type: pa.DataType,
    cells: list[str | None],
    expected: list[JsonValue],
) -> None:
    converter = RowConverter([column(type_, scale=scale)], options)
    batch = pa.RecordBatch.from_arrays([pa.array(values, arrow_type)], names=["c"])

    from_text = converter.convert_rows([[cell] for cell in cells])
    from_arrow = converter.convert_arrow(batch)

    assert as_json(from_text) == as_json([[value] for value in expected])
    assert as_json(from_arrow) == as_json(from_text)


def test_arrow_rows_line_up_across_many_columns() -> None:
    columns = [column("LONG"), column("STRING", position=1), column("DATE", position=2)]
    batch = pa.RecordBatch.from_arrays(
        [pa.array([1, None]), pa.array([None, "b"]), pa.array([date(2000, 1, 1), None])],
        names=["a", "b", "c"],
    )

    assert RowConverter(columns).convert_arrow(batch) == [
        [1, None, "2000-01-01"],
        [None, "b", None],
    ]


def test_an_arrow_batch_with_the_wrong_number_of_columns_is_a_protocol_error() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array([1])], names=["a"])

    with pytest.raises(ProtocolError, match="1 columns, the schema 2"):
        RowConverter([column("LONG"), column("LONG", position=1)]).convert_arrow(batch)


def test_an_arrow_type_that_contradicts_the_column_type_is_a_protocol_error() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array([1.5])], names=["a"])

    with pytest.raises(ProtocolError, match="'c' \\(LONG\\) arrived as Arrow double"):
        RowConverter([column("LONG")]).convert_arrow(batch)


def test_a_bad_arrow_text_cell_is_a_protocol_error_that_hides_the_value() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array(["SECRET"])], names=["a"])

    with pytest.raises(ProtocolError) as caught:
        RowConverter([column("LONG")]).convert_arrow(batch)

    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize("gc_was_enabled", [True, False], ids=["gc-on", "gc-off"])
def test_garbage_collection_is_left_as_it_was_even_after_a_bad_cell(gc_was_enabled: bool) -> None:
    converter = RowConverter([column("INT")])
    big_chunk: list[list[str | None]] = [["1"]] * 20_000
    (gc.enable if gc_was_enabled else gc.disable)()
    try:
        converter.convert_rows(iter(big_chunk))
        with pytest.raises(ProtocolError):
            converter.convert_rows([*big_chunk, ["x"]])

        assert gc.isenabled() is gc_was_enabled
    finally:
        gc.enable()


def test_the_module_imports_and_converts_without_pyarrow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    spec = importlib.util.spec_from_file_location("normalize_without_arrow", normalize.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)

    spec.loader.exec_module(module)
    rows = module.RowConverter([module.Column("c", "LONG", "BIGINT", 0)]).convert_rows([["1"]])

    assert rows == [[1]]


# ---- whole-column fast paths: where they apply and where they must not -------------------

# (column type, scale, a column of cells, expected values): every column here is converted at
# once, so a text that looks rendered sits next to texts that must still be converted.
COLUMNS = [
    pytest.param(
        "DECIMAL", 2, ["1.50", "-0.05", "0.00", "-0.00", "123456.78", None],
        ["1.50", "-0.05", "0.00", "-0.00", "123456.78", None],
        id="decimal-plain-at-scale-kept",
    ),
    pytest.param(
        "DECIMAL", 2, ["1.50", "1.5", "7", "1.505"], ["1.50", "1.50", "7.00", "1.505"],
        id="decimal-one-short-of-scale-among-plain",
    ),
    pytest.param(
        "DECIMAL", 2, ["1.50", "01.50", "-01.50", "+1.50"], ["1.50", "1.50", "-1.50", "1.50"],
        id="decimal-leading-zero-or-plus-rendered",
    ),
    pytest.param(
        "DECIMAL", 2, [".50", "-.50", "1."], ["0.50", "-0.50", "1.00"],
        id="decimal-missing-digits-rendered",
    ),
    pytest.param(
        "DECIMAL", 2, ["1.50", "\u0661.\u0665\u0660"], ["1.50", "1.50"],
        id="decimal-other-script-digits-rendered",
    ),
    pytest.param(
        "DECIMAL", 0, ["42", "-7", "0", "42.0"], ["42", "-7", "0", "42.0"],
        id="decimal-scale-0",
    ),
    pytest.param(
        "DECIMAL", 2, ["1.5E+2", "1.50"], ["150.00", "1.50"], id="decimal-exponent-among-plain"
    ),
    pytest.param(
        "TIMESTAMP", None,
        ["2024-01-15T09:30:00.123Z", "2024-02-29T23:59:59.000Z", None],
        ["2024-01-15T09:30:00.123Z", "2024-02-29T23:59:59.000Z", None],
        id="ts-rendered-kept",
    ),
    pytest.param(
        "TIMESTAMP", None,
        ["2024-01-15T09:30:00.123Z", "2024-01-15T09:30:00.123456Z",
         "2024-01-15T09:30:00.123456789Z"],
        ["2024-01-15T09:30:00.123Z", "2024-01-15T09:30:00.123456Z",
         "2024-01-15T09:30:00.123456789Z"],
        id="ts-milli-micro-and-nanoseconds-kept",
    ),
    pytest.param(
        "TIMESTAMP", None,
        ["2024-01-15T09:30:00.123456Z", "2024-01-15T09:30:00.123000Z"],
        ["2024-01-15T09:30:00.123456Z", "2024-01-15T09:30:00.123Z"],
        id="ts-trailing-zero-group-dropped",
    ),
    pytest.param(
        "TIMESTAMP", None,
        ["2024-01-15T09:30:00.000Z", "2024-01-15T09:30:00.000z", "2024-01-15 09:30:00.000Z"],
        ["2024-01-15T09:30:00.000Z", "2024-01-15T09:30:00.000Z", "2024-01-15T09:30:00.000Z"],
        id="ts-near-forms-rendered",
    ),
    pytest.param(
        "TIMESTAMP_NTZ", None,
        ["2023-03-15T12:34:56.000", "2023-03-15T12:34:56.500000", None],
        ["2023-03-15T12:34:56.000", "2023-03-15T12:34:56.500", None],
        id="ntz-rendered-kept-trailing-zero-group-dropped",
    ),
    pytest.param(
        "DATE", None, ["2024-02-29", "1969-07-20", "0001-01-01", None],
        ["2024-02-29", "1969-07-20", "0001-01-01", None],
        id="date-rendered-kept",
    ),
    pytest.param(
        "DATE", None, ["2024-01-15", "20240116"], ["2024-01-15", "2024-01-16"],
        id="date-basic-form-among-rendered",
    ),
    pytest.param(
        "BOOLEAN", None, ["true", "FALSE", None, "True"], [True, False, None, True],
        id="boolean-other-case-among-lower",
    ),
    pytest.param(
        "ARRAY<DECIMAL(4,2)>", None, ["[1.5,2]", "[]", None, '["3.25"]'],
        [["1.50", "2.00"], [], None, ["3.25"]],
        id="nested-decimals-at-their-scale",
    ),
    pytest.param(
        "MAP<INT,BIGINT>", None, ['{"1":9007199254740993}', '[{"key":2,"value":null}]'],
        [[{"key": 1, "value": 9007199254740993}], [{"key": 2, "value": None}]],
        id="nested-map-from-either-text-form",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("type_", "scale", "cells", "expected"), COLUMNS)
def test_a_column_converts_as_its_cells_do_one_by_one(
    type_: str, scale: int | None, cells: list[str | None], expected: list[JsonValue]
) -> None:
    converter = RowConverter([column(type_, scale=scale)])

    whole = converter.convert_rows([[cell] for cell in cells])
    one_by_one = [converter.convert_rows([[cell]])[0] for cell in cells]

    assert as_json(whole) == as_json([[value] for value in expected])
    assert as_json(one_by_one) == as_json(whole)


BAD_AMONG_GOOD = [
    pytest.param("DECIMAL", 2, "1.50\n2.00", id="decimal-two-values-in-one-cell"),
    pytest.param("DECIMAL", 2, "-", id="decimal-sign-alone"),
    pytest.param("DECIMAL", 2, "1.50-", id="decimal-sign-last"),
    pytest.param("TIMESTAMP", None, "2023-02-29T00:00:00.000Z", id="ts-no-leap-day"),
    pytest.param("TIMESTAMP", None, "2024-04-31T00:00:00.000Z", id="ts-april-31"),
    pytest.param("TIMESTAMP", None, "2024-01-15T24:00:00.000Z", id="ts-hour-24"),
    pytest.param("TIMESTAMP", None, "2024-01-15T09:60:00.000Z", id="ts-minute-60"),
    pytest.param("TIMESTAMP", None, "2024-01-15T09:30:60.000Z", id="ts-second-60"),
    pytest.param("TIMESTAMP", None, "0000-01-15T09:30:00.000Z", id="ts-year-0"),
    pytest.param("TIMESTAMP", None, "2024-13-15T09:30:00.000Z", id="ts-month-13"),
    pytest.param("TIMESTAMP", None, "\uff12024-01-15T09:30:00.000Z", id="ts-fullwidth-digit"),
    pytest.param(
        "TIMESTAMP", None, "2024-01-15T09:30:00.000Z\n2024-01-15T09:30:00.000Z", id="ts-two"
    ),
    pytest.param("TIMESTAMP_NTZ", None, "2023-02-29T12:34:56.000", id="ntz-no-leap-day"),
    pytest.param("DATE", None, "2023-02-29", id="date-no-leap-day"),
    pytest.param("DATE", None, "2024-00-10", id="date-month-0"),
    pytest.param("DATE", None, "2024-01-15\n", id="date-with-newline"),
    pytest.param("ARRAY<INT>", None, '["1"," x"]', id="nested-int-not-a-number"),
    pytest.param("ARRAY<INT>", None, "[1.5]", id="nested-int-with-a-fraction"),
    pytest.param("ARRAY<DATE>", None, '["2023-02-29"]', id="nested-date-no-leap-day"),
    pytest.param("ARRAY<DECIMAL(4,2)>", None, "[true]", id="nested-decimal-a-boolean"),
    pytest.param("STRUCT<a:BOOLEAN>", None, '{"a":"yes"}', id="nested-boolean-a-word"),
    pytest.param("STRUCT<a:BINARY>", None, '{"a":"\\\\x00"}', id="nested-binary-not-base64"),
    pytest.param("MAP<INT,STRING>", None, '{"one":"a"}', id="nested-map-key-not-an-int"),
    pytest.param("ARRAY<INT>", None, '{"a":1}', id="nested-array-an-object"),
    pytest.param("ARRAY<INT>", None, "[1,", id="nested-text-not-json"),
]


@pytest.mark.parametrize(("type_", "scale", "cell"), BAD_AMONG_GOOD)
def test_one_bad_cell_in_a_column_of_good_ones_is_still_a_protocol_error(
    type_: str, scale: int | None, cell: str
) -> None:
    good = {"DECIMAL": "1.50", "DATE": "2024-01-15", "TIMESTAMP_NTZ": "2024-01-15T09:30:00.000"}
    good_nested = {"ARRAY": "[]", "STRUCT": "{}", "MAP": "{}"}
    kind = type_.partition("<")[0]
    cells = [good_nested.get(kind) or good.get(type_, "2024-01-15T09:30:00.000Z")] * 3 + [cell]

    with pytest.raises(ProtocolError, match=f"'c' .* {kind}$"):
        RowConverter([column(type_, scale=scale)]).convert_rows([[c] for c in cells])


def test_rows_stay_in_order_across_blocks_and_a_late_bad_cell_is_found() -> None:
    converter = RowConverter([column("INT"), column("DATE", position=1)])
    rows: list[list[str | None]] = [[str(i), "2024-01-15"] for i in range(5000)]

    assert [row[0] for row in converter.convert_rows(rows)] == list(range(5000))
    with pytest.raises(ProtocolError, match="'c' \\(position 1\\)"):
        converter.convert_rows([*rows, ["5000", "2024-02-30"]])


def test_arrow_timestamps_beyond_year_9999_keep_their_five_digit_year() -> None:
    batch = pa.RecordBatch.from_arrays(
        [pa.array([253402300800000, 1705311000007], pa.timestamp("ms"))], names=["c"]
    )

    rows = RowConverter([column("TIMESTAMP")]).convert_arrow(batch)

    assert rows == [["10000-01-01T00:00:00.000Z"], ["2024-01-15T09:30:00.007Z"]]
