"""Result schema, value string forms, chunking and limits (reference §5, §7, §13)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dbx_backend.localwarehouse.errors import SqlError
from dbx_backend.localwarehouse.results import Limits, _BudgetMixin
from tests.localwarehouse.conftest import Api, StartWarehouse


@pytest.mark.parametrize(
    ("expression", "type_name", "type_text", "text"),
    [
        pytest.param("CAST(-7 AS TINYINT)", "BYTE", "TINYINT", "-7", id="tinyint"),
        pytest.param("CAST(300 AS SMALLINT)", "SHORT", "SMALLINT", "300", id="smallint"),
        pytest.param("CAST(70000 AS INT)", "INT", "INT", "70000", id="int"),
        pytest.param("9007199254740993", "LONG", "BIGINT", "9007199254740993", id="bigint-2^53+1"),
        pytest.param("CAST(1.5 AS DOUBLE)", "DOUBLE", "DOUBLE", "1.5", id="double"),
        pytest.param("CAST(1 AS DOUBLE)", "DOUBLE", "DOUBLE", "1.0", id="double-whole"),
        pytest.param("CAST('NaN' AS DOUBLE)", "DOUBLE", "DOUBLE", "NaN", id="nan"),
        pytest.param("CAST('Infinity' AS DOUBLE)", "DOUBLE", "DOUBLE", "Infinity", id="inf"),
        pytest.param("CAST('-Infinity' AS DOUBLE)", "DOUBLE", "DOUBLE", "-Infinity", id="-inf"),
        pytest.param("CAST(2.5 AS FLOAT)", "FLOAT", "FLOAT", "2.5", id="float"),
        pytest.param("CAST(1.5 AS DECIMAL(10,2))", "DECIMAL", "DECIMAL(10,2)", "1.50", id="dec"),
        pytest.param("'héllo'", "STRING", "STRING", "héllo", id="string"),
        pytest.param("''", "STRING", "STRING", "", id="empty-string"),
        pytest.param("true", "BOOLEAN", "BOOLEAN", "true", id="boolean"),
        pytest.param("DATE'2024-02-29'", "DATE", "DATE", "2024-02-29", id="date"),
        pytest.param(
            "TIMESTAMP'2024-01-15 09:30:00'",
            "TIMESTAMP",
            "TIMESTAMP",
            "2024-01-15T09:30:00.000Z",
            id="timestamp",
        ),
        pytest.param(
            "TIMESTAMP'2024-01-15 09:30:00.123456'",
            "TIMESTAMP",
            "TIMESTAMP",
            "2024-01-15T09:30:00.123456Z",
            id="timestamp-micros",
        ),
        pytest.param(
            "TIMESTAMP_NTZ'2023-03-15 12:34:56'",
            "TIMESTAMP_NTZ",
            "TIMESTAMP_NTZ",
            "2023-03-15T12:34:56.000",
            id="timestamp-ntz",
        ),
        pytest.param("X'48656C6C6F'", "BINARY", "BINARY", "SGVsbG8=", id="binary-base64"),
        pytest.param("array(1, 2, 3)", "ARRAY", "ARRAY<INT>", "[1,2,3]", id="array"),
        pytest.param(
            "named_struct('a', 1, 'b', 'x')",
            "STRUCT",
            "STRUCT<a:INT,b:STRING>",
            '{"a":1,"b":"x"}',
            id="struct",
        ),
        pytest.param("map('k', 1)", "MAP", "MAP<STRING,INT>", '{"k":1}', id="map"),
        pytest.param(
            "named_struct('b', array(X'CAFE', NULL), 'm', map(1, X'00'))",
            "STRUCT",
            "STRUCT<b:ARRAY<BINARY>,m:MAP<INT,BINARY>>",
            '{"b":["yv4=",null],"m":{"1":"AA=="}}',
            id="nested-binary-base64",
        ),
        pytest.param("INTERVAL 1 DAY", "INTERVAL", "INTERVAL", "1 day", id="interval"),
        pytest.param("NULL", "NULL", "VOID", None, id="null"),
    ],
)
async def test_types_are_described_and_rendered_as_databricks_does(
    api: Api, expression: str, type_name: str, type_text: str, text: str | None
) -> None:
    answer = await api.execute(f"SELECT {expression} AS v")

    column = answer["manifest"]["schema"]["columns"][0]
    assert (column["name"], column["position"]) == ("v", 0)
    assert (column["type_name"], column["type_text"]) == (type_name, type_text)
    assert answer["result"]["data_array"] == [[text]]


async def test_decimal_keeps_its_precision_and_scale(api: Api) -> None:
    answer = await api.execute("SELECT CAST(12.5 AS DECIMAL(18,3)) AS amount")

    column = answer["manifest"]["schema"]["columns"][0]
    assert (column["type_precision"], column["type_scale"]) == (18, 3)
    assert answer["result"]["data_array"] == [["12.500"]]


async def read_all_inline(api: Api, first: dict[str, Any]) -> list[list[Any]]:
    """Follow next_chunk_internal_link verbatim, checking row offsets (reference §13)."""
    statement_id = first["statement_id"]
    result = first["result"]
    rows: list[list[Any]] = []
    for _ in range(first["manifest"]["total_chunk_count"]):
        assert result["row_offset"] == len(rows)
        assert result["row_count"] == len(result["data_array"])
        rows.extend(result["data_array"])
        link = result.get("next_chunk_internal_link")
        if link is None:
            break
        assert link.startswith(f"/api/2.0/sql/statements/{statement_id}/result/chunks/")
        assert link.endswith(f"?row_offset={len(rows)}")
        status, result = await api.request("GET", link)
        assert status == 200
    return rows


async def test_a_hundred_thousand_rows_arrive_in_small_chunks_with_exact_offsets(
    start_warehouse: StartWarehouse,
) -> None:
    api = await start_warehouse(chunk_rows=2500)

    first = await api.execute("SELECT id FROM range(100000) AS t(id) ORDER BY id")
    rows = await read_all_inline(api, first)

    manifest = first["manifest"]
    assert (manifest["total_row_count"], manifest["total_chunk_count"]) == (100000, 40)
    assert [c["row_offset"] for c in manifest["chunks"]] == list(range(0, 100000, 2500))
    assert rows == [[str(i)] for i in range(100000)]
    assert manifest["truncated"] is False


async def test_chunks_are_cut_by_bytes_as_well_as_rows(start_warehouse: StartWarehouse) -> None:
    api = await start_warehouse(chunk_rows=1000, chunk_bytes=1024)

    first = await api.execute("SELECT repeat('x', 100) AS s FROM range(100)")
    rows = await read_all_inline(api, first)

    chunks = first["manifest"]["chunks"]
    assert len(rows) == 100
    assert len(chunks) > 1
    assert all(c["row_count"] <= 10 for c in chunks)


async def test_chunks_can_be_read_in_any_order_and_more_than_once(
    start_warehouse: StartWarehouse,
) -> None:
    api = await start_warehouse(chunk_rows=10)
    first = await api.execute("SELECT id FROM range(30) AS t(id) ORDER BY id")
    statement_id = first["statement_id"]

    last, middle, again = await asyncio.gather(
        api.chunk(statement_id, 2), api.chunk(statement_id, 1), api.chunk(statement_id, 2)
    )

    assert last == again
    assert last["data_array"][0] == ["20"]
    assert "next_chunk_index" not in last
    assert (middle["next_chunk_index"], middle["row_offset"]) == (2, 10)


@pytest.mark.parametrize(
    ("row_limit", "rows", "truncated"),
    [
        pytest.param(3, 3, True, id="below-result"),
        pytest.param(10, 10, False, id="equal-to-result"),
        pytest.param(50, 10, False, id="above-result"),
        pytest.param(0, 0, True, id="zero"),
    ],
)
async def test_row_limit_trims_the_result_and_says_so(
    api: Api, row_limit: int, rows: int, truncated: bool
) -> None:
    answer = await api.execute("SELECT * FROM range(10)", row_limit=row_limit)

    assert answer["manifest"]["total_row_count"] == rows
    assert len(answer["result"]["data_array"]) == rows
    assert answer["manifest"]["truncated"] is truncated


async def test_byte_limit_trims_the_result_and_says_so(api: Api) -> None:
    answer = await api.execute("SELECT repeat('x', 100) FROM range(100)", byte_limit=1000)

    assert 0 < answer["manifest"]["total_row_count"] < 10
    assert answer["manifest"]["truncated"] is True


async def test_an_inline_result_over_the_cap_fails_the_statement(
    start_warehouse: StartWarehouse,
) -> None:
    api = await start_warehouse(inline_limit_bytes=10_000)

    answer = await api.execute("SELECT repeat('x', 100) FROM range(1000)")

    assert answer["status"]["state"] == "FAILED"
    assert answer["status"]["error"]["error_code"] == "BAD_REQUEST"
    assert "EXTERNAL_LINKS" in answer["status"]["error"]["message"]
    assert "manifest" not in answer


async def test_an_empty_result_has_its_schema_and_one_empty_chunk(api: Api) -> None:
    answer = await api.execute("SELECT 1 AS one WHERE false")

    assert answer["manifest"]["schema"]["columns"][0]["name"] == "one"
    assert answer["manifest"]["total_row_count"] == 0
    assert answer["result"]["data_array"] == []


async def test_a_chunk_index_out_of_range_is_400(api: Api) -> None:
    done = await api.execute("SELECT 1")

    status, answer = await api.request(
        "GET", f"/api/2.0/sql/statements/{done['statement_id']}/result/chunks/5"
    )

    assert (status, answer["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


async def test_strict_mode_closes_the_statement_after_its_last_chunk(
    start_warehouse: StartWarehouse,
) -> None:
    api = await start_warehouse(chunk_rows=5, close_after_last_chunk=True)
    first = await api.execute("SELECT * FROM range(10)")

    await api.chunk(first["statement_id"], 1)
    after = await api.get(first["statement_id"])

    assert after["status"] == {"state": "CLOSED"}


@pytest.mark.parametrize(
    ("row_limit", "byte_limit", "inline_cap", "count", "size"),
    [
        pytest.param(None, None, None, 1000, 60, id="no-limit"),
        pytest.param(7, None, None, 10, 60, id="row-limit-inside"),
        pytest.param(10, None, None, 10, 60, id="row-limit-exactly"),
        pytest.param(None, 1000, None, 100, 60, id="byte-limit-inside"),
        pytest.param(None, 600, None, 10, 60, id="byte-limit-exactly"),
        pytest.param(5, 1000, None, 100, 60, id="both"),
        pytest.param(None, None, 1000, 100, 60, id="over-the-inline-cap"),
        pytest.param(0, None, None, 3, 60, id="zero-rows"),
    ],
)
def test_rows_admitted_at_once_are_those_admitted_one_by_one(
    row_limit: int | None, byte_limit: int | None, inline_cap: int | None, count: int, size: int
) -> None:
    limits = Limits(10, 1 << 20, row_limit, byte_limit, inline_cap)
    one_by_one, at_once = _BudgetMixin(limits), _BudgetMixin(limits)

    expected = _admit_one_by_one(one_by_one, count, size)
    if isinstance(expected, str):
        with pytest.raises(SqlError, match="larger than the 1000 bytes allowed"):
            at_once.admit_many(count, size)
        return
    assert at_once.admit_many(count, size) == expected
    assert _budget_state(at_once) == _budget_state(one_by_one)


def _admit_one_by_one(budget: _BudgetMixin, count: int, size: int) -> int | str:
    admitted = 0
    try:
        while admitted < count and budget.admit(size):
            admitted += 1
    except SqlError as exc:
        return exc.error_class
    return admitted


def _budget_state(budget: _BudgetMixin) -> tuple[Any, ...]:
    rows_left = budget.rows_left if budget.rows_left >= 0 else "unlimited"
    return (rows_left, budget.bytes_left, budget.total_bytes, budget.stopped, budget.truncated)
