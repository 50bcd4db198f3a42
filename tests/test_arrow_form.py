"""The Arrow form: each type's Arrow type, passthrough, exact casts, and values equal to JSON's."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from dbx_backend.engine.arrow_form import ArrowBatches, arrow_type
from dbx_backend.engine.normalize import (
    Column,
    JsonValue,
    NormalizeOptions,
    RowConverter,
    columns_from_manifest,
)
from dbx_backend.warehouse.errors import ProtocolError
from dbx_backend.warehouse.wire import ResultManifest
from tests.test_normalize import PARITY, as_json, column

MAPPING = [
    pytest.param("BYTE", pa.int8(), id="byte"),
    pytest.param("SHORT", pa.int16(), id="short"),
    pytest.param("INT", pa.int32(), id="int"),
    pytest.param("LONG", pa.int64(), id="long"),
    pytest.param("FLOAT", pa.float32(), id="float"),
    pytest.param("DOUBLE", pa.float64(), id="double"),
    pytest.param("DECIMAL(10,2)", pa.decimal128(10, 2), id="decimal"),
    pytest.param("DECIMAL(38,0)", pa.decimal128(38, 0), id="decimal-38"),
    pytest.param("BOOLEAN", pa.bool_(), id="boolean"),
    pytest.param("STRING", pa.string(), id="string"),
    pytest.param("CHAR", pa.string(), id="char"),
    pytest.param("DATE", pa.date32(), id="date"),
    pytest.param("TIMESTAMP", pa.timestamp("us", "UTC"), id="timestamp-utc"),
    pytest.param("TIMESTAMP_NTZ", pa.timestamp("us"), id="timestamp-ntz"),
    pytest.param("BINARY", pa.binary(), id="binary"),
    pytest.param("NULL", pa.null(), id="null"),
    pytest.param("ARRAY<BIGINT>", pa.list_(pa.int64()), id="array"),
    pytest.param("MAP<STRING,DECIMAL(4,2)>", pa.map_(pa.string(), pa.decimal128(4, 2)), id="map"),
    pytest.param(
        "STRUCT<a:INT,b:ARRAY<DATE>>",
        pa.struct([("a", pa.int32()), ("b", pa.list_(pa.date32()))]),
        id="struct",
    ),
    pytest.param("INTERVAL DAY TO SECOND", None, id="interval-open"),
    pytest.param("VARIANT", None, id="variant-open"),
    pytest.param("GEOMETRY(4326)", None, id="geometry-open"),
    pytest.param("ARRAY<INTERVAL DAY TO SECOND>", None, id="nested-holding-an-open-type"),
]


def typed(type_text: str, position: int = 0) -> Column:
    """A column as the warehouse describes it: its type name is read from `type_text`."""
    info = {"name": f"c{position}", "position": position, "type_text": type_text}
    manifest = ResultManifest.model_validate({"schema": {"columns": [info]}})
    return columns_from_manifest(manifest, NormalizeOptions())[0]


@pytest.mark.parametrize(("type_text", "expected"), MAPPING)
def test_each_type_has_its_documented_arrow_type(
    type_text: str, expected: pa.DataType | None
) -> None:
    assert arrow_type(typed(type_text).sql_type) == expected


def one_column(values: list[Any], arrow: pa.DataType) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(values, arrow)], names=["c"])


def python(batches: list[pa.RecordBatch]) -> list[Any]:
    """The first column's values, NaN as "nan" at any depth so that values compare equal."""
    return [nan_as_text(batch.column(0)[i].as_py()) for batch in batches for i in range(len(batch))]


def nan_as_text(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, list):
        return [nan_as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: nan_as_text(v) for k, v in value.items()}
    return value


# Nanoseconds do not fit timestamp[us]: that result cannot be sent as Arrow.
_TOO_PRECISE = {"timestamp-offset-nanoseconds"}
# An open type keeps the warehouse's Arrow type (here Arrow intervals); from JSON_ARRAY it is
# text, so only what a client reads back is compared.
_NATIVE_OPEN = {"interval-from-arrow-month-day-nano", "nested-interval-from-arrow"}


@pytest.mark.parametrize(
    ("type_", "scale", "options", "values", "arrow_type_", "cells", "expected"), PARITY
)
def test_arrow_values_read_back_as_the_json_answer_whatever_the_warehouse_sent(
    request: pytest.FixtureRequest,
    type_: str,
    scale: int | None,
    options: NormalizeOptions,
    values: list[Any],
    arrow_type_: pa.DataType,
    cells: list[str | None],
    expected: list[JsonValue],
) -> None:
    columns = [column(type_, scale=scale)]
    if request.node.callspec.id in _TOO_PRECISE:
        with pytest.raises(ProtocolError, match="cannot hold"):
            ArrowBatches(columns).from_cells([[cell] for cell in cells])
        return

    from_cells = ArrowBatches(columns).from_cells([[cell] for cell in cells])
    from_arrow = ArrowBatches(columns).from_arrow(one_column(values, arrow_type_))

    if request.node.callspec.id not in _NATIVE_OPEN:
        assert python(from_cells) == python(from_arrow)
        assert from_cells[0].schema == from_arrow[0].schema
    mapped = arrow_type(columns[0].sql_type)
    assert from_arrow[0].schema.field(0).type == (mapped or arrow_type_)
    # What a client reads from the Arrow answer is what the JSON answer says.
    read_back = RowConverter(columns, options).convert_arrow(from_arrow[0])
    assert as_json(read_back) == as_json([[value] for value in expected])


@pytest.mark.parametrize(
    ("type_text", "values", "arrow"),
    [
        pytest.param("BIGINT", [1, None, 2**63 - 1], pa.int64(), id="int64"),
        pytest.param("DOUBLE", [1.5, float("nan")], pa.float64(), id="float64"),
        pytest.param("DECIMAL(10,2)", [Decimal("1.10")], pa.decimal128(10, 2), id="decimal"),
        pytest.param("STRING", ["a", None, ""], pa.string(), id="utf8"),
        pytest.param(
            "TIMESTAMP", [datetime(2024, 1, 15, tzinfo=UTC)], pa.timestamp("us", "UTC"), id="ts"
        ),
        pytest.param("ARRAY<INT>", [[1, None], None], pa.list_(pa.int32()), id="list"),
    ],
)
def test_a_column_already_in_its_arrow_type_passes_through_untouched(
    type_text: str, values: list[Any], arrow: pa.DataType
) -> None:
    batch = one_column(values, arrow)

    [sent] = ArrowBatches([typed(type_text)]).from_arrow(batch)

    received, original = sent.column(0), batch.column(0)
    assert [b.address if b else None for b in received.buffers()] == [
        b.address if b else None for b in original.buffers()
    ]


@pytest.mark.parametrize(
    ("type_text", "values", "arrow", "expected"),
    [
        pytest.param("STRING", ["ü", None], pa.large_string(), ["ü", None], id="large-string"),
        pytest.param("BINARY", [b"\x00"], pa.large_binary(), [b"\x00"], id="large-binary"),
        pytest.param("BIGINT", [7], pa.int32(), [7], id="narrower-integer"),
        pytest.param(
            "DECIMAL(20,0)", [2**64 - 1], pa.uint64(), [Decimal(2**64 - 1)], id="uint64-decimal"
        ),
        pytest.param(
            "TIMESTAMP",
            [1705311000123456000],
            pa.timestamp("ns", "Etc/UTC"),
            [datetime(2024, 1, 15, 9, 30, 0, 123456, UTC)],
            id="utc-by-another-name-in-nanoseconds",
        ),
        pytest.param(
            "TIMESTAMP",
            [datetime(2024, 1, 15, 15, 0, tzinfo=UTC)],
            pa.timestamp("us", "+05:30"),
            [datetime(2024, 1, 15, 15, 0, tzinfo=UTC)],
            id="another-zone-keeps-the-instant",
        ),
        pytest.param("FLOAT", [0.1], pa.float64(), [pytest.approx(0.1)], id="float-sent-wide"),
        pytest.param(
            "ARRAY<BIGINT>",
            ["[9007199254740993]"],
            pa.string(),
            [[9007199254740993]],
            id="nested-sent-as-json-text",
        ),
        pytest.param(
            "STRUCT<p:DECIMAL(4,2)>",
            ['{"p":1.5}'],
            pa.string(),
            [{"p": Decimal("1.50")}],
            id="struct-sent-as-json-text",
        ),
        pytest.param("DATE", [None, None], pa.null(), [None, None], id="all-null"),
    ],
)
def test_another_arrow_type_is_brought_to_the_documented_one(
    type_text: str, values: list[Any], arrow: pa.DataType, expected: list[Any]
) -> None:
    col = typed(type_text)

    [sent] = ArrowBatches([col]).from_arrow(one_column(values, arrow))

    assert sent.schema.field(0).type == arrow_type(col.sql_type)
    assert python([sent]) == expected


def test_an_open_column_keeps_the_warehouse_type_and_every_chunk_must_agree() -> None:
    form = ArrowBatches([typed("INTERVAL DAY TO SECOND")])
    interval = pa.month_day_nano_interval()
    first = one_column([pa.MonthDayNano([0, 3, 0])], interval)

    [sent] = form.from_arrow(first)

    assert sent.schema.field(0).type == interval
    with pytest.raises(ProtocolError, match="changed its Arrow type"):
        form.from_arrow(one_column([1.5], pa.float64()))


def test_each_field_carries_its_type_text_and_the_schema_its_metadata() -> None:
    form = ArrowBatches([typed("DECIMAL(10,2)")], metadata={"statement_id": "01f0"})

    [batch] = form.from_cells([["1.10"]])

    field = batch.schema.field(0)
    assert field.metadata == {b"type_text": b"DECIMAL(10,2)", b"type_name": b"DECIMAL"}
    assert batch.schema.metadata == {b"statement_id": b"01f0"}
    assert form.schema() == batch.schema


def test_a_value_the_arrow_type_cannot_hold_is_a_protocol_error_that_hides_it() -> None:
    form = ArrowBatches([typed("DECIMAL(4,2)")])

    with pytest.raises(ProtocolError) as caught:
        form.from_cells([["12.345"]])  # more digits than the scale: never rounded

    assert "12.345" not in str(caught.value)


def test_json_rows_of_a_cached_answer_give_the_same_batches_as_the_warehouse_chunk() -> None:
    columns = [typed("BIGINT"), typed("TIMESTAMP", 1), typed("BINARY", 2)]
    cells: list[list[Any]] = [
        ["9007199254740993", "2024-01-15T09:30:00.5Z", "yv4="],
        [None, None, None],
    ]
    rows = RowConverter(columns).convert_rows(cells)

    from_rows = ArrowBatches(columns).from_rows(rows)
    from_cells = ArrowBatches(columns).from_cells(cells)

    assert from_rows[0].equals(from_cells[0])


@pytest.mark.parametrize(
    ("type_text", "arrow", "passes"),
    [
        pytest.param("BIGINT", pa.int64(), True, id="long-as-int64"),
        pytest.param("BIGINT", pa.int32(), False, id="long-as-int32-is-cast"),
        pytest.param("DECIMAL(18,2)", pa.decimal128(18, 2), True, id="decimal-its-type"),
        pytest.param("TIMESTAMP", pa.timestamp("us", "UTC"), True, id="timestamp-utc"),
        pytest.param("TIMESTAMP", pa.timestamp("ns", "UTC"), False, id="timestamp-ns-is-cast"),
        pytest.param("INTERVAL DAY TO SECOND", pa.month_day_nano_interval(), True, id="open"),
    ],
)
def test_a_batch_passes_through_when_every_column_has_its_stream_type(
    type_text: str, arrow: pa.DataType, passes: bool
) -> None:
    form = ArrowBatches([typed(type_text)])
    batch = one_column([], arrow)

    assert form.passes_through(batch.schema) is passes
    [sent] = form.from_arrow(batch)
    assert (sent.schema.field(0).type == arrow) is passes  # else cast to its stream type
