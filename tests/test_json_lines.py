"""NDJSON lines written a whole column at a time are byte for byte the plain way's lines."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from dbx_backend.engine.json_lines import JsonLines, encode_rows
from dbx_backend.engine.normalize import Column, JsonValue, NormalizeOptions, RowConverter
from dbx_backend.warehouse.errors import ProtocolError
from tests.test_normalize import LONG_AS_STRING, PARITY, column

DEFAULT = NormalizeOptions()


def plain(columns: list[Column], options: NormalizeOptions, batch: pa.RecordBatch) -> bytes:
    """The plain way: every value converted to Python, then each row dumped by orjson."""
    return encode_rows(RowConverter(columns, options).convert_arrow(batch))


def whole_columns(columns: list[Column], options: NormalizeOptions, batch: pa.RecordBatch) -> bytes:
    lines = JsonLines(columns, options, min_rows=0).from_arrow(batch)
    assert lines.rows == batch.num_rows
    return bytes(lines.data)


@pytest.mark.parametrize(
    ("type_", "scale", "options", "values", "arrow_type", "cells", "expected"), PARITY
)
def test_each_type_is_written_as_the_plain_way_writes_it(
    type_: str,
    scale: int | None,
    options: NormalizeOptions,
    values: list[Any],
    arrow_type: pa.DataType,
    cells: list[str | None],
    expected: list[JsonValue],
) -> None:
    columns = [column(type_, scale=scale)]
    batch = pa.RecordBatch.from_arrays([pa.array(values, arrow_type)], names=["c"])

    assert whole_columns(columns, options, batch) == plain(columns, options, batch)


EDGE_COLUMNS = [
    pytest.param(
        "STRING",
        pa.string(),
        ['plain', 'a "quote"', "back\\slash", "tab\there", "nl\n", "\x00\x1f\x7f", "é 🌍",
         "\u2028", "", None, "</script>"],
        id="strings-some-needing-escapes",
    ),
    pytest.param("STRING", pa.string(), ["x", "back\\slash", None], id="only-a-backslash"),
    pytest.param("STRING", pa.string(), ["x", "unit\x1fsep", "y"], id="only-a-control-char"),
    pytest.param("STRING", pa.string(), ["x", "\x7f é \u2028", None], id="none-needing-escapes"),
    pytest.param("STRING", pa.large_string(), ["x", None, 'q"'], id="large-string"),
    pytest.param(
        "DOUBLE",
        pa.float64(),
        [0.0, -0.0, 1.0, 1.5, 0.1, 1e15, 1e16, 1e17, 1e21, 1e22, 1e-5, 1e-6, 1e-7, 5e-324,
         1.7976931348623157e308, -2.5e-10, 2.0**53, 1 / 3, None],
        id="doubles-across-magnitudes",
    ),
    pytest.param("DOUBLE", pa.float64(), [1.0, float("nan"), None], id="doubles-with-nan"),
    pytest.param("LONG", pa.int64(), [2**63 - 1, -(2**63), 0, None], id="longs"),
    pytest.param("INT", pa.int32(), [-(2**31), 7, None], id="ints"),
    pytest.param("BOOLEAN", pa.bool_(), [True, False, None], id="booleans"),
    pytest.param(
        "DATE", pa.date32(), [date(1, 1, 1), date(999, 12, 31), date(2024, 2, 29), None],
        id="dates",
    ),
    pytest.param(
        "TIMESTAMP",
        pa.timestamp("us", "UTC"),
        [datetime(2024, 1, 15, 9, 30, 0, 123456, UTC), datetime(2024, 1, 15, tzinfo=UTC), None],
        id="timestamps-mixed-precision",
    ),
    pytest.param(
        "TIMESTAMP_NTZ", pa.timestamp("us"), [datetime(1, 1, 1), datetime(9999, 12, 31)],
        id="timestamps-ntz-extremes",
    ),
    pytest.param(
        "DECIMAL(38,10)",
        pa.decimal128(38, 10),
        [Decimal("0.0000000001"), Decimal("-12.5"), Decimal(0), None],
        id="decimals-e-notation-rendered-plain",
    ),
    pytest.param("DECIMAL(5,2)", pa.decimal128(5, 2), [Decimal("1.5"), None], id="decimals"),
    pytest.param("BINARY", pa.binary(), [b"\x00\xff", b"", None], id="binary-plain-way"),
    pytest.param(
        "ARRAY<BIGINT>", pa.list_(pa.int64()), [[2**62, None], [], None], id="array-plain-way"
    ),
]  # fmt: skip


@pytest.mark.parametrize("options", [DEFAULT, LONG_AS_STRING], ids=["default", "long-as-string"])
@pytest.mark.parametrize(("type_text", "arrow_type", "values"), EDGE_COLUMNS)
def test_edge_values_are_written_as_the_plain_way_writes_them(
    type_text: str, arrow_type: pa.DataType, values: list[Any], options: NormalizeOptions
) -> None:
    kind = type_text.partition("<")[0].partition("(")[0]
    scale = int(type_text.split(",")[1].rstrip(")")) if kind == "DECIMAL" else None
    columns = [Column("c", kind, type_text, 0, scale=scale)]
    batch = pa.RecordBatch.from_arrays([pa.array(values, arrow_type)], names=["c"])

    assert whole_columns(columns, options, batch) == plain(columns, options, batch)


def mixed_batch(rows: int, seed: int) -> tuple[list[Column], pa.RecordBatch]:
    """Seven mixed columns with nulls scattered, as a large result has them."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.1 else value

    columns = [
        Column("id", "LONG", "BIGINT", 0),
        Column("x", "DOUBLE", "DOUBLE", 1),
        Column("d", "DECIMAL", "DECIMAL(18,2)", 2, precision=18, scale=2),
        Column("s", "STRING", "STRING", 3),
        Column("day", "DATE", "DATE", 4),
        Column("ts", "TIMESTAMP", "TIMESTAMP", 5),
        Column("ok", "BOOLEAN", "BOOLEAN", 6),
    ]
    epoch = datetime(2020, 1, 1, tzinfo=UTC)
    arrays = [
        pa.array([maybe(rng.randrange(-(2**63), 2**63)) for _ in range(rows)], pa.int64()),
        pa.array(
            [maybe(rng.uniform(-1e9, 1e9) * 10 ** rng.randrange(-20, 20)) for _ in range(rows)]
        ),
        pa.array(
            [maybe(Decimal(rng.randrange(-(10**17), 10**17)).scaleb(-2)) for _ in range(rows)],
            pa.decimal128(18, 2),
        ),
        pa.array([maybe(rng.choice(["a", 'b"c', "ü", "", "x\ny"]) * 3) for _ in range(rows)]),
        pa.array(
            [maybe(date(2000, 1, 1) + timedelta(days=rng.randrange(9000))) for _ in range(rows)]
        ),
        pa.array(
            [maybe(epoch + timedelta(microseconds=rng.randrange(10**15))) for _ in range(rows)],
            pa.timestamp("us", "UTC"),
        ),
        pa.array([maybe(rng.random() < 0.5) for _ in range(rows)], pa.bool_()),
    ]
    return columns, pa.RecordBatch.from_arrays(arrays, names=[c.name for c in columns])


@pytest.mark.parametrize("seed", range(5))
def test_a_large_mixed_batch_is_written_as_the_plain_way_writes_it(seed: int) -> None:
    columns, batch = mixed_batch(3000, seed)

    assert whole_columns(columns, DEFAULT, batch) == plain(columns, DEFAULT, batch)


@pytest.mark.parametrize(
    ("max_rows", "gather_rows", "large_bytes"),
    [(1000, 300, 1 << 30), (1 << 16, 2048, 1), (700, 256, 1)],
    ids=["batch-slices", "64-bit-offsets", "both"],
)
def test_lines_gathered_in_slices_or_with_64_bit_offsets_are_the_same(
    monkeypatch: pytest.MonkeyPatch, max_rows: int, gather_rows: int, large_bytes: int
) -> None:
    """A batch is written in slices and its lines gathered a slice at a time; texts past
    32-bit offsets are gathered as large binary. Small limits here exercise every path."""
    import dbx_backend.engine.json_lines as json_lines

    monkeypatch.setattr(json_lines, "_GATHER_MAX_ROWS", max_rows)
    monkeypatch.setattr(json_lines, "_GATHER_ROWS", gather_rows)
    monkeypatch.setattr(json_lines, "_LARGE_BYTES", large_bytes)
    columns, batch = mixed_batch(3001, seed=5)

    assert whole_columns(columns, DEFAULT, batch) == plain(columns, DEFAULT, batch)


def test_a_slice_of_a_batch_writes_only_its_own_rows() -> None:
    columns, batch = mixed_batch(100, seed=7)
    part = batch.slice(31, 17)

    assert whole_columns(columns, DEFAULT, part) == plain(columns, DEFAULT, part)


def test_a_small_batch_takes_the_plain_way_and_lines_join_in_order() -> None:
    columns, batch = mixed_batch(50, seed=3)
    form = JsonLines(columns, DEFAULT)  # the default threshold: 50 rows are written plainly

    parts = [form.from_arrow(batch.slice(0, 20)), form.from_arrow(batch.slice(20))]
    joined = form.join(parts)

    assert bytes(joined.data) == plain(columns, DEFAULT, batch)
    assert form.count(joined) == 50


def test_a_bad_string_is_the_plain_way_protocol_error() -> None:
    bad = pa.Array.from_buffers(
        pa.string(),
        1,
        [None, pa.py_buffer(b"\x00\x00\x00\x00\x02\x00\x00\x00"), pa.py_buffer(b"\xff\xfe")],
    )
    batch = pa.RecordBatch.from_arrays([bad], names=["c"])

    with pytest.raises(ProtocolError, match="not a valid STRING"):
        JsonLines([column("STRING")], DEFAULT, min_rows=0).from_arrow(batch)


def test_chunks_of_several_sizes_written_by_several_threads_at_once_stay_whole() -> None:
    """The reader converts chunks in threads, several at a time, with one form."""
    columns, batch = mixed_batch(4000, seed=11)
    form = JsonLines(columns, DEFAULT, min_rows=0)
    chunks = [batch.slice(start, size) for start, size in ((0, 1500), (1500, 1499), (2999, 1001))]
    expected = [plain(columns, DEFAULT, chunk) for chunk in chunks]

    with ThreadPoolExecutor(max_workers=3) as pool:
        written = list(pool.map(lambda c: bytes(form.from_arrow(c).data), chunks * 20))

    assert written == expected * 20
