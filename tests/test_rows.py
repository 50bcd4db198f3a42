"""JSON_ARRAY rows parsed a slice at a time: the same rows as parsing the chunk whole, cut
only at row boundaries, whatever the strings hold; the client hands the rows over as text."""

from __future__ import annotations

import random

import orjson
import pytest
from aioresponses import aioresponses

from dbx_backend.config import Settings
from dbx_backend.engine.json_answer import EncodedJsonRows
from dbx_backend.engine.normalize import Column, RowConverter
from dbx_backend.engine.reader import decode_chunk
from dbx_backend.warehouse.client import WarehouseClient
from dbx_backend.warehouse.errors import ProtocolError
from dbx_backend.warehouse.retry import NO_WAIT
from dbx_backend.warehouse.rows import RowArray
from tests.conftest import TEST_HOST

SID = "01f0-rows"
CHUNK = f"{TEST_HOST}/api/2.0/sql/statements/{SID}/result/chunks/1"
STATUS = f"{TEST_HOST}/api/2.0/sql/statements/{SID}"
# Cells that look like row boundaries, quotes and escapes to a scanner that ignores strings.
TRICKY = ["],[", '"],["', "\\", '\\"', "a\\\\", "[[1,2],[3]]", "", "x ] , [ y", "\n"]


def tricky_rows(count: int, seed: int) -> list[list[str | None]]:
    pick = random.Random(seed)  # noqa: S311 - test data, not a secret
    return [
        [pick.choice([*TRICKY, None, str(n)]) for _ in range(pick.randint(1, 4))]
        for n in range(count)
    ]


def all_rows(rows: RowArray, max_bytes: int) -> list[object]:
    return [row for _, part in rows.slices(max_bytes) for row in part]


@pytest.mark.parametrize("max_bytes", [1, 40, 4096, 1 << 20])
@pytest.mark.parametrize("indent", [False, True], ids=["compact", "indented"])
def test_slices_hold_the_rows_of_the_whole_chunk(max_bytes: int, indent: bool) -> None:
    rows = tricky_rows(500, seed=max_bytes)
    text = orjson.dumps(rows, option=orjson.OPT_INDENT_2 if indent else 0)

    assert all_rows(RowArray.of_text(text), max_bytes) == rows


def test_each_slice_says_where_its_rows_start() -> None:
    rows = tricky_rows(300, seed=7)
    starts = [(first, len(part)) for first, part in RowArray.of_text(orjson.dumps(rows)).slices(64)]

    assert len(starts) > 1
    assert [first for first, _ in starts] == [
        sum(n for _, n in starts[:i]) for i in range(len(starts))
    ]


def test_take_reads_a_range_of_rows() -> None:
    rows = tricky_rows(300, seed=3)
    text = RowArray.of_text(orjson.dumps(rows))

    assert text.take(120, 135) == rows[120:135]
    assert text.take(290, 400) == rows[290:]
    assert text.count() == 300


@pytest.mark.parametrize("body", [b"", b"  \n", b"[]", b"[ \n ]"])
def test_an_empty_chunk_has_no_rows(body: bytes) -> None:
    rows = RowArray.of_text(body)

    assert not rows
    assert all_rows(rows, 1) == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(b'{"rows": []}', "not an array of rows", id="object"),
        pytest.param(b'"text"', "not an array of rows", id="string"),
        pytest.param(b'[["a"],["b"', "not an array of rows", id="cut-short"),
        pytest.param(b'[["a"]] [["b"]]', "not valid JSON", id="two-arrays"),
        pytest.param(b'[["a"]],[["b"]]', "not valid JSON", id="two-values"),
        pytest.param(b'[["a"],["b" x]]', "not valid JSON", id="garbage"),
    ],
)
def test_a_malformed_chunk_is_a_protocol_error(body: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        all_rows(RowArray.of_text(body), 4)


def test_a_malformed_row_in_a_later_slice_is_named_by_its_place_in_the_chunk() -> None:
    columns = [Column("n", "INT", "INT", 0), Column("s", "STRING", "STRING", 1)]
    cells: list[list[str]] = [[str(n), "x" * 40] for n in range(5_000)]
    cells[4_321] = ["1"]
    form = EncodedJsonRows(RowConverter(columns))

    with pytest.raises(ProtocolError, match="row 4321 of a chunk has 1 cells"):
        decode_chunk("JSON_ARRAY", orjson.dumps(cells), form)


async def test_the_client_hands_over_a_chunks_rows_as_text(
    settings: Settings, mocked: aioresponses
) -> None:
    rows = tricky_rows(50, seed=11)
    mocked.get(CHUNK, body=orjson.dumps({"chunk_index": 1, "data_array": rows, "row_count": 50}))

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        chunk = await client.get_chunk(SID, 1)

    assert chunk.data_array is not None
    assert chunk.data_array.nbytes > 0  # not parsed yet
    assert all_rows(chunk.data_array, 64) == rows
    assert chunk.row_count == 50


async def test_the_first_chunk_of_a_statement_keeps_its_envelope(
    settings: Settings, mocked: aioresponses
) -> None:
    rows = tricky_rows(20, seed=5)
    body = {
        "statement_id": SID,
        "status": {"state": "SUCCEEDED"},
        "manifest": {"schema": {"columns": [{"name": "data_array", "type_name": "STRING"}]}},
        "result": {"data_array": rows, "next_chunk_index": 1, "row_count": 20},
    }
    mocked.get(STATUS, body=orjson.dumps(body, option=orjson.OPT_INDENT_2))

    async with WarehouseClient(settings, policy=NO_WAIT) as client:
        response = await client.get_statement(SID)

    assert response.result is not None
    assert response.result.data_array is not None
    assert all_rows(response.result.data_array, 64) == rows
    assert response.result.next_chunk_index == 1
    assert response.manifest is not None
    assert response.manifest.schema_.columns[0].name == "data_array"
