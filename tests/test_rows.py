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
from dbx_backend.warehouse.rows import RowArray, place_rows, split_rows
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


# Pieces of strings that look like structure to a scanner: boundaries, ends of the rows,
# quotes after backslashes, the key itself, escapes, multi-byte characters, controls.
PIECES = [
    "],[", "] , [", "]]", "]],", "]]}", '"', "\\", '\\"', "\\\\", '\\\\"', "\\u005c", "\\n",
    '"data_array": [["x"]]', "é", "\u2028", "😀", "\n", "\t", "\x00", "\x1f", " ", "a", "{",
    "}", ",", ":", "[", "]", "null",
]  # fmt: skip


def adversarial(pick: random.Random) -> str | None:
    roll = pick.random()
    if roll < 0.1:
        return None
    if roll < 0.13:  # one cell larger than a slice
        size = pick.randint(70_000, 100_000)
        return (pick.choice(PIECES) * size)[:size]
    return "".join(pick.choice(PIECES) for _ in range(pick.randint(0, 10)))


def dumped(value: object, pick: random.Random) -> bytes:
    """`value` as a warehouse could write it: compact or indented, \\u escapes or UTF-8."""
    import json

    indent = pick.choice([None, None, 1, 4])
    return json.dumps(value, indent=indent, ensure_ascii=pick.random() < 0.5).encode()


@pytest.mark.parametrize("seed", range(40))
def test_the_rows_and_envelope_are_what_parsing_the_body_whole_gives(seed: int) -> None:
    pick = random.Random(seed)  # noqa: S311 - test data, not a secret
    width = pick.randint(0, 3)
    rows = [[adversarial(pick) for _ in range(width)] for _ in range(pick.randint(0, 40))]
    result = {"chunk_index": 0, "row_offset": 0, "row_count": len(rows), "data_array": rows}
    parts = {
        "statement_id": SID,
        "status": {"state": "SUCCEEDED", "error": {"message": adversarial(pick)}},
        "manifest": {"schema": {"columns": [{"name": adversarial(pick), "comment": "x"}]}},
        "result": dict(pick.sample(list(result.items()), len(result))),  # any key order
    }
    payload = dumped(dict(pick.sample(list(parts.items()), len(parts))), pick)

    split = split_rows(payload)
    assert split is not None
    envelope, text = split
    data = orjson.loads(envelope)
    assert place_rows(data, text)
    data["result"]["data_array"] = all_rows(text, pick.choice([1, 100, 4096, 65536]))
    assert data == orjson.loads(payload)
    assert text.count() == len(rows)


@pytest.mark.parametrize("seed", range(40))
def test_a_chunk_sliced_anywhere_is_what_parsing_it_whole_gives(seed: int) -> None:
    pick = random.Random(seed)  # noqa: S311 - test data, not a secret
    width = pick.randint(0, 3)
    rows = [[adversarial(pick) for _ in range(width)] for _ in range(pick.randint(0, 40))]
    text = RowArray.of_text(dumped(rows, pick))

    for max_bytes in (1, 7, 64, 1000, 65536):
        assert all_rows(text, max_bytes) == rows
    assert text.take(3, 9) == rows[3:9]


@pytest.mark.parametrize("space", [b"\x0b", b"\x0c"])
def test_whitespace_json_does_not_allow_between_rows_fails_as_the_whole_chunk_would(
    space: bytes,
) -> None:
    body = b'[["a"]' + space + b',["b"]]'
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)

    with pytest.raises(ProtocolError, match="not valid JSON"):
        all_rows(RowArray.of_text(body), 1)
