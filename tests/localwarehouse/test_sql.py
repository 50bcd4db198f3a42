"""Databricks SQL on DuckDB: errors, named parameters, names and sample data (§8.3, §11)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.localwarehouse.conftest import Api, StartWarehouse


@pytest.mark.parametrize(
    ("statement", "error_class", "sql_state"),
    [
        pytest.param("SELEC 1", "PARSE_SYNTAX_ERROR", "42601", id="parse-error"),
        pytest.param("SELECT * FORM t", "PARSE_SYNTAX_ERROR", "42601", id="parse-error-form"),
        pytest.param("SELECT 1; SELECT 2", "PARSE_SYNTAX_ERROR", "42601", id="two-statements"),
        pytest.param("SELECT * FROM nope", "TABLE_OR_VIEW_NOT_FOUND", "42P01", id="no-table"),
        pytest.param("SELECT * FROM nosuch.t", "TABLE_OR_VIEW_NOT_FOUND", "42P01", id="no-schema"),
        pytest.param(
            "SELECT * FROM nosuch.s.t", "TABLE_OR_VIEW_NOT_FOUND", "42P01", id="no-catalog"
        ),
        pytest.param("SELECT * FROM no_such_fn()", "UNRESOLVED_ROUTINE", "42883", id="no-tvf"),
        pytest.param(
            "SELECT 9223372036854775807 + 1", "ARITHMETIC_OVERFLOW", "22003", id="long-overflow"
        ),
        pytest.param("SELECT 'a' - 1", "DATATYPE_MISMATCH", "42K09", id="type-mismatch"),
        pytest.param(
            "SELECT nope FROM range(1)",
            "UNRESOLVED_COLUMN.WITH_SUGGESTION",
            "42703",
            id="no-column",
        ),
        pytest.param("SELECT no_such_fn(1)", "UNRESOLVED_ROUTINE", "42883", id="no-function"),
        pytest.param("SELECT :missing", "UNBOUND_SQL_PARAMETER", "42P02", id="unbound"),
        pytest.param("SELECT $1", "UNBOUND_SQL_PARAMETER", "42P02", id="positional-dollar"),
        pytest.param("SELECT ?", "UNBOUND_SQL_PARAMETER", "42P02", id="positional-question"),
        pytest.param("SELECT ${x}", "UNBOUND_SQL_PARAMETER", "42P02", id="dollar-brace"),
        pytest.param("SELECT 1 / 0", "DIVIDE_BY_ZERO", "22012", id="divide-by-zero"),
        pytest.param("SELECT 1.5 / 0", "DIVIDE_BY_ZERO", "22012", id="decimal-by-zero"),
        pytest.param("SELECT 5 % 0", "DIVIDE_BY_ZERO", "22012", id="modulo-by-zero"),
        pytest.param("SELECT CAST('abc' AS INT)", "CAST_INVALID_INPUT", "22018", id="bad-cast"),
        pytest.param(
            "SELECT CAST(2147483647 AS INT) + CAST(1 AS INT)",
            "ARITHMETIC_OVERFLOW",
            "22003",
            id="overflow",
        ),
    ],
)
async def test_sql_errors_fail_the_statement_with_databricks_error_classes(
    api: Api, statement: str, error_class: str, sql_state: str
) -> None:
    answer = await api.execute(statement)

    status = answer["status"]
    assert status["state"] == "FAILED"
    assert status["error"]["error_code"] == "BAD_REQUEST"
    assert status["error"]["message"].startswith(f"[{error_class}] ")
    assert status["error"]["message"].endswith(f"SQLSTATE: {sql_state}")
    assert status["sql_state"] == sql_state
    assert "manifest" not in answer


@pytest.mark.parametrize(
    ("parameter", "type_name", "text"),
    [
        pytest.param({"value": "42", "type": "INT"}, "INT", "42", id="int"),
        pytest.param(
            {"value": "9007199254740993", "type": "BIGINT"}, "LONG", "9007199254740993", id="big"
        ),
        pytest.param({"value": "0.1", "type": "DOUBLE"}, "DOUBLE", "0.1", id="double"),
        pytest.param({"value": "5", "type": "DECIMAL(10,2)"}, "DECIMAL", "5.00", id="decimal"),
        pytest.param({"value": "2020-01-01", "type": "DATE"}, "DATE", "2020-01-01", id="date"),
        pytest.param(
            {"value": "2020-01-01T10:00:00Z", "type": "TIMESTAMP"},
            "TIMESTAMP",
            "2020-01-01T10:00:00.000Z",
            id="timestamp",
        ),
        pytest.param({"value": "true", "type": "BOOLEAN"}, "BOOLEAN", "true", id="boolean"),
        pytest.param({"value": "text"}, "STRING", "text", id="string-by-default"),
        pytest.param({"type": "INT"}, "INT", None, id="null-int"),
        pytest.param({"value": None}, "STRING", None, id="null-string"),
    ],
)
async def test_parameters_are_bound_as_values_of_their_declared_type(
    api: Api, parameter: dict[str, Any], type_name: str, text: str | None
) -> None:
    answer = await api.execute("SELECT :p AS p", parameters=[{"name": "p", **parameter}])

    assert answer["manifest"]["schema"]["columns"][0]["type_name"] == type_name
    assert answer["result"]["data_array"] == [[text]]


async def test_a_parameter_value_is_never_spliced_into_the_sql(api: Api) -> None:
    hostile = "x'); DROP TABLE t; --"

    answer = await api.execute(
        "SELECT :v AS v, length(:v) AS n", parameters=[{"name": "v", "value": hostile}]
    )

    assert answer["result"]["data_array"] == [[hostile, str(len(hostile))]]


async def test_a_value_that_does_not_cast_to_its_type_fails_the_statement(api: Api) -> None:
    answer = await api.execute(
        "SELECT :n AS n", parameters=[{"name": "n", "value": "ten", "type": "INT"}]
    )

    assert answer["status"]["error"]["message"].startswith("[CAST_INVALID_INPUT]")


async def test_colons_in_strings_comments_and_casts_are_not_markers(api: Api) -> None:
    answer = await api.execute(
        "SELECT ':nope' AS s, CAST('7' AS INT)::BIGINT AS n, :x AS x -- :comment",
        parameters=[{"name": "x", "value": "1"}, {"name": "unused", "value": "2"}],
    )

    assert answer["result"]["data_array"] == [[":nope", "7", "1"]]


async def test_backtick_identifiers_and_limit_are_understood(api: Api) -> None:
    answer = await api.execute("SELECT id AS `my id` FROM range(10) AS t(id) LIMIT 2")

    assert answer["manifest"]["schema"]["columns"][0]["name"] == "my id"
    assert answer["result"]["data_array"] == [["0"], ["1"]]


async def test_sleep_ms_sleeps_and_returns_its_argument(api: Api) -> None:
    answer = await api.execute("SELECT sleep_ms(20)")

    assert answer["manifest"]["schema"]["columns"][0]["name"] == "sleep_ms(20)"
    assert answer["result"]["data_array"] == [["20"]]


@pytest.fixture
async def samples(start_warehouse: StartWarehouse) -> Api:
    return await start_warehouse(seed_samples=True)


async def test_samples_nyctaxi_trips_has_the_real_columns_and_row_count(samples: Api) -> None:
    count = await samples.execute("SELECT count(*) AS n FROM samples.nyctaxi.trips")
    first = await samples.execute("SELECT * FROM samples.nyctaxi.trips LIMIT 1")

    columns = first["manifest"]["schema"]["columns"]
    assert count["result"]["data_array"] == [["21932"]]
    assert [(c["name"], c["type_name"]) for c in columns] == [
        ("tpep_pickup_datetime", "TIMESTAMP"),
        ("tpep_dropoff_datetime", "TIMESTAMP"),
        ("trip_distance", "DOUBLE"),
        ("fare_amount", "DOUBLE"),
        ("pickup_zip", "INT"),
        ("dropoff_zip", "INT"),
    ]


async def test_catalog_and_schema_fields_set_the_default_namespace(samples: Api) -> None:
    answer = await samples.execute("SELECT count(*) FROM region", catalog="samples", schema="tpch")

    assert answer["result"]["data_array"] == [["5"]]


async def test_tpch_tables_join_across_three_part_names(samples: Api) -> None:
    answer = await samples.execute(
        "SELECT r.r_name, count(*) AS nations FROM samples.tpch.nation n "
        "JOIN samples.tpch.region r ON n.n_regionkey = r.r_regionkey "
        "GROUP BY r.r_name ORDER BY r.r_name"
    )

    assert [row[1] for row in answer["result"]["data_array"]] == ["5"] * 5


async def test_an_unknown_schema_field_fails_with_schema_not_found(samples: Api) -> None:
    answer = await samples.execute("SELECT 1", catalog="samples", schema="nope")

    assert answer["status"]["error"]["message"].startswith("[SCHEMA_NOT_FOUND]")


async def test_a_missing_catalog_or_schema_in_a_table_name_names_the_whole_table(
    api: Api,
) -> None:
    answer = await api.execute("SELECT * FROM nosuch.s.t")

    assert answer["status"]["error"]["message"].startswith(
        "[TABLE_OR_VIEW_NOT_FOUND] The table or view `nosuch`.`s`.`t` cannot be found."
    )


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("SELECT 170141183460469231731687303715884105727 * 10", id="int128"),
        pytest.param("SELECT 9223372036854775807 + 1", id="int64"),
        pytest.param("SELECT CAST(1 AS STRING) + 1", id="binder-candidates"),
    ],
)
async def test_error_messages_use_databricks_type_names_not_duckdb_ones(
    api: Api, statement: str
) -> None:
    answer = await api.execute(statement)

    message = answer["status"]["error"]["message"]
    for engine_word in ("INT128", "INT64", "HUGEINT", "VARCHAR", "INTEGER_LITERAL", "Candidate"):
        assert engine_word not in message, message
