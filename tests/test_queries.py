"""Named queries: header parsing, load-time checks, and parameter binding."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbx_backend.queries import (
    NamedQuery,
    ParamError,
    QueryFileError,
    QueryParam,
    bind_params,
    load_queries,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "queries"


def write(directory: Path, filename: str, text: str) -> Path:
    path = directory / filename
    path.write_text(text, encoding="utf-8")
    return path


def load_one(tmp_path: Path, text: str, filename: str = "q.sql") -> NamedQuery:
    write(tmp_path, filename, text)
    (query,) = load_queries(tmp_path).values()
    return query


def query_of(*params: QueryParam) -> NamedQuery:
    sql = "SELECT " + ", ".join(f":{param.name}" for param in params)
    return NamedQuery("q", None, sql, params)


def param(
    name: str = "p", type_: str = "INT", *, required: bool = True, default: str | None = None
) -> QueryParam:
    return QueryParam(name, type_, required, default, None)


def test_header_declares_name_description_and_params(tmp_path: Path) -> None:
    text = (
        "-- name: trips\n"
        "-- description: Trips in one zip\n"
        "-- param: zip INT required -- pickup zip\n"
        "-- param: since DATE default 2016-01-01\n"
        "-- param: vendor STRING optional\n"
        "SELECT * FROM t WHERE zip = :zip AND d >= :since AND v = :vendor;\n"
    )

    query = load_one(tmp_path, text, filename="anything.sql")

    assert query == NamedQuery(
        name="trips",
        description="Trips in one zip",
        sql="SELECT * FROM t WHERE zip = :zip AND d >= :since AND v = :vendor",
        params=(
            QueryParam("zip", "INT", True, None, "pickup zip"),
            QueryParam("since", "DATE", False, "2016-01-01", None),
            QueryParam("vendor", "STRING", False, None, None),
        ),
    )


def test_query_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    query = load_one(tmp_path, "SELECT 1\n", filename="one_row.sql")

    assert query.name == "one_row"


@pytest.mark.parametrize(
    ("declaration", "expected"),
    [
        pytest.param("INT required", ("INT", True, None), id="int-required"),
        pytest.param("bigint required", ("BIGINT", True, None), id="type-case-insensitive"),
        pytest.param("DECIMAL(10, 2) default 1.50", ("DECIMAL(10,2)", False, "1.50"), id="dec"),
        pytest.param("DECIMAL default 7", ("DECIMAL(10,0)", False, "7"), id="bare-decimal"),
        pytest.param("DECIMAL(5) optional", ("DECIMAL(5,0)", False, None), id="decimal-p"),
        pytest.param(
            "TIMESTAMP default '2016-01-01 08:00:00'",
            ("TIMESTAMP", False, "2016-01-01 08:00:00"),
            id="quoted-default-with-space",
        ),
        pytest.param("STRING default 'it''s'", ("STRING", False, "it's"), id="quoted-quote"),
        pytest.param("STRING default ''", ("STRING", False, ""), id="empty-string-default"),
        pytest.param("BOOLEAN default TRUE", ("BOOLEAN", False, "true"), id="boolean-default"),
        pytest.param("TIMESTAMP_NTZ optional", ("TIMESTAMP_NTZ", False, None), id="ntz"),
    ],
)
def test_param_declarations_are_parsed(
    tmp_path: Path, declaration: str, expected: tuple[str, bool, str | None]
) -> None:
    query = load_one(tmp_path, f"-- param: p {declaration}\nSELECT :p\n")

    (declared,) = query.params
    assert (declared.type, declared.required, declared.default) == expected


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT ':not_a_marker', :p", id="string-literal"),
        pytest.param('SELECT "x:not_a_marker", :p', id="double-quoted-string"),
        pytest.param("SELECT :p -- and :not_a_marker", id="line-comment"),
        pytest.param("SELECT /* :not_a_marker */ :p", id="block-comment"),
        pytest.param("SELECT a::int, :p FROM t", id="double-colon-cast"),
        pytest.param("SELECT raw:not_a_marker, :p FROM t", id="json-path"),
        pytest.param("SELECT `col`:not_a_marker, :p FROM t", id="json-path-after-quoted-name"),
        pytest.param("SELECT * FROM IDENTIFIER(:p)", id="identifier-clause"),
        pytest.param("SELECT :p, :p + 1", id="marker-used-twice"),
        pytest.param("SELECT x FROM t LIMIT :p", id="after-keyword"),
        pytest.param("SELECT CASE WHEN a THEN :p END FROM t", id="after-then"),
    ],
)
def test_only_real_markers_count(tmp_path: Path, sql: str) -> None:
    query = load_one(tmp_path, f"-- param: p INT required\n{sql}\n")

    assert [declared.name for declared in query.params] == ["p"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "-- param: p INTEGR required\nSELECT :p",
            "q.sql, line 1: parameter 'p' has unknown type 'INTEGR'",
            id="unknown-type",
        ),
        pytest.param(
            "-- param: p ARRAY<INT> required\nSELECT :p",
            "q.sql, line 1: parameter 'p' has unknown type 'ARRAY<INT>'",
            id="complex-type",
        ),
        pytest.param(
            "-- param: p DECIMAL(40,2) required\nSELECT :p",
            "q.sql, line 1: parameter 'p' has unknown type 'DECIMAL(40,2)'",
            id="decimal-precision-too-large",
        ),
        pytest.param(
            "-- param: p INT\nSELECT :p",
            "q.sql, line 1: parameter 'p' needs 'required', 'optional' or 'default <value>'",
            id="missing-mode",
        ),
        pytest.param(
            "-- param: p INT mandatory\nSELECT :p",
            "q.sql, line 1: parameter 'p' needs 'required', 'optional' or 'default <value>'",
            id="bad-mode",
        ),
        pytest.param(
            "-- param: p INT default\nSELECT :p",
            "q.sql, line 1: parameter 'p': 'default' needs a value",
            id="default-without-value",
        ),
        pytest.param(
            "-- param: p INT default abc\nSELECT :p",
            "q.sql, line 1: default of parameter 'p' (INT): expected an integer",
            id="default-of-wrong-type",
        ),
        pytest.param(
            "-- param: p STRING default 'open\nSELECT :p",
            "q.sql, line 1: parameter 'p': the quoted default is not closed",
            id="unclosed-quoted-default",
        ),
        pytest.param(
            "-- param: p INT required pickup zip\nSELECT :p",
            "q.sql, line 1: parameter 'p': unexpected 'pickup zip'",
            id="description-without-dashes",
        ),
        pytest.param(
            "-- param: 1p INT required\nSELECT 1",
            "q.sql, line 1: parameter name '1p' is not an identifier",
            id="param-name-not-identifier",
        ),
        pytest.param(
            "-- param: p INT required\n-- param: p INT optional\nSELECT :p",
            "q.sql, line 2: parameter 'p' is declared twice",
            id="duplicate-param",
        ),
        pytest.param(
            "-- name: my-query\nSELECT 1",
            "q.sql, line 1: query name 'my-query' is not an identifier",
            id="name-not-identifier",
        ),
        pytest.param(
            "-- name: a\n-- name: b\nSELECT 1",
            "q.sql, line 2: a second 'name' line",
            id="two-names",
        ),
        pytest.param(
            "-- descripton: typo\nSELECT 1",
            "q.sql, line 1: unknown header key 'descripton'",
            id="misspelt-key",
        ),
        pytest.param(
            "-- param: p INT required\nSELECT 1\nWHERE x = :p AND y = :q",
            "q.sql, line 3: parameter :q is not declared in the header",
            id="undeclared-marker",
        ),
        pytest.param(
            "-- param: p INT required\n-- param: unused INT optional\nSELECT :p",
            "q.sql, line 2: parameter 'unused' is never used",
            id="declared-but-unused",
        ),
        pytest.param("SELECT * FROM t WHERE x = ?", "q.sql, line 1: positional '?'", id="qmark"),
        pytest.param("-- name: empty\n\n", "q.sql, line 2: no SQL after the header", id="no-sql"),
        pytest.param(
            "SELECT 1\nFROM t WHERE s = 'unclosed",
            "q.sql, line 2: the SQL cannot be read",
            id="unclosed-string",
        ),
    ],
)
def test_bad_query_files_are_refused_with_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    write(tmp_path, "q.sql", text)

    with pytest.raises(QueryFileError) as caught:
        load_queries(tmp_path)

    assert str(caught.value).startswith(message)


def test_two_files_with_the_same_query_name_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.sql", "-- name: same\nSELECT 1")
    write(tmp_path, "b.sql", "-- name: same\nSELECT 2")

    with pytest.raises(
        QueryFileError, match=r"b\.sql: query name 'same' is already used by a\.sql"
    ):
        load_queries(tmp_path)


def test_file_stem_that_is_not_an_identifier_needs_a_name_line(tmp_path: Path) -> None:
    write(tmp_path, "top-trips.sql", "SELECT 1")

    with pytest.raises(QueryFileError, match=r"top-trips\.sql, line 1: file name 'top-trips'"):
        load_queries(tmp_path)


def test_query_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "q.sql").write_bytes(b"SELECT '\xff'")

    with pytest.raises(QueryFileError, match=r"q\.sql: not UTF-8"):
        load_queries(tmp_path)


def test_missing_queries_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QueryFileError, match="'absent' does not exist"):
        load_queries(tmp_path / "absent")


def test_only_sql_files_are_loaded(tmp_path: Path) -> None:
    write(tmp_path, "one.sql", "SELECT 1")
    write(tmp_path, "notes.md", "-- name: broken header\n")

    assert list(load_queries(tmp_path)) == ["one"]


def test_example_queries_load() -> None:
    queries = load_queries(EXAMPLES)

    assert {"trips_by_zip", "fares_by_hour", "top_customers"} <= set(queries)
    assert all(query.description for query in queries.values())


def test_example_trips_by_zip_binds_with_its_defaults() -> None:
    query = load_queries(EXAMPLES)["trips_by_zip"]

    bound = bind_params(query, {"zip": 10001})

    assert bound == {
        "zip": {"value": "10001", "type": "INT"},
        "since": {"value": "2016-01-01", "type": "DATE"},
        "limit": {"value": "100", "type": "INT"},
    }


@pytest.mark.parametrize(
    ("type_", "given", "expected"),
    [
        pytest.param("STRING", "a ' b", "a ' b", id="string-kept-verbatim"),
        pytest.param("STRING", "", "", id="empty-string-stays-empty"),
        pytest.param("INT", 42, "42", id="int"),
        pytest.param("INT", "-7", "-7", id="int-as-text"),
        pytest.param("INT", 2**31 - 1, "2147483647", id="int-max"),
        pytest.param("TINYINT", -128, "-128", id="tinyint-min"),
        pytest.param("SMALLINT", 32767, "32767", id="smallint-max"),
        pytest.param("BIGINT", "9223372036854775807", "9223372036854775807", id="bigint-text"),
        pytest.param("DOUBLE", 1.5, "1.5", id="double"),
        pytest.param("DOUBLE", 3, "3", id="double-from-int"),
        pytest.param("DOUBLE", "NaN", "NaN", id="double-nan"),
        pytest.param("DOUBLE", "-infinity", "-Infinity", id="double-negative-infinity"),
        pytest.param("FLOAT", 0.1, "0.1", id="float"),
        pytest.param("DECIMAL(10,2)", "12.50", "12.50", id="decimal-keeps-its-scale"),
        pytest.param("DECIMAL(10,2)", 12, "12", id="decimal-from-int"),
        pytest.param("DECIMAL(10,2)", 0.25, "0.25", id="decimal-from-float"),
        pytest.param("DECIMAL(4,2)", "-99.99", "-99.99", id="decimal-at-limit"),
        pytest.param("BOOLEAN", True, "true", id="boolean-true"),
        pytest.param("BOOLEAN", "FALSE", "false", id="boolean-text"),
        pytest.param("DATE", "2024-02-29", "2024-02-29", id="date-leap-day"),
        pytest.param("TIMESTAMP", "2016-01-01T08:30:00Z", "2016-01-01T08:30:00Z", id="ts-z"),
        pytest.param(
            "TIMESTAMP", "2016-01-01 08:30:00.123+01:00", "2016-01-01 08:30:00.123+01:00", id="ts"
        ),
        pytest.param("TIMESTAMP", "2016-01-01", "2016-01-01", id="timestamp-date-only"),
        pytest.param("TIMESTAMP_NTZ", "2016-01-01T08:30", "2016-01-01T08:30", id="ntz"),
    ],
)
def test_good_values_bind_as_text(type_: str, given: object, expected: str) -> None:
    query = query_of(param(type_=type_))

    assert bind_params(query, {"p": given}) == {"p": {"value": expected, "type": type_}}


@pytest.mark.parametrize(
    ("type_", "given", "why"),
    [
        pytest.param("INT", "abc", "expected an integer", id="int-from-text"),
        pytest.param("INT", 1.5, "expected an integer", id="int-from-fraction"),
        pytest.param("INT", 1.0, "expected an integer", id="int-from-float"),
        pytest.param("INT", True, "expected an integer", id="int-from-boolean"),
        pytest.param("INT", 2**31, "out of range", id="int-overflow"),
        pytest.param("TINYINT", 128, "out of range", id="tinyint-overflow"),
        pytest.param("SMALLINT", -32769, "out of range", id="smallint-underflow"),
        pytest.param("BIGINT", 2**63, "out of range", id="bigint-overflow"),
        pytest.param("INT", [1], "not a list or object", id="list"),
        pytest.param("STRING", {"a": 1}, "not a list or object", id="object"),
        pytest.param("STRING", 5, "expected a string", id="string-from-number"),
        pytest.param("DOUBLE", "1.2.3", "expected a number", id="double-from-text"),
        pytest.param("DOUBLE", False, "expected a number", id="double-from-boolean"),
        pytest.param("FLOAT", 1e39, "out of range for FLOAT", id="float-overflow"),
        pytest.param("DECIMAL(10,2)", "12.345", "more than 2 digits", id="decimal-scale"),
        pytest.param("DECIMAL(4,2)", "100", "too large", id="decimal-precision"),
        pytest.param("DECIMAL(10,2)", "1e3", "expected a decimal number", id="decimal-exponent"),
        pytest.param("DECIMAL(10,2)", "abc", "expected a decimal number", id="decimal-text"),
        pytest.param("BOOLEAN", 1, "expected true or false", id="boolean-from-int"),
        pytest.param("BOOLEAN", "yes", "expected true or false", id="boolean-from-yes"),
        pytest.param("DATE", "2023-02-29", "not a real date", id="date-not-leap"),
        pytest.param("DATE", "01/02/2016", "expected a date as YYYY-MM-DD", id="date-format"),
        pytest.param("DATE", 20160101, "expected a string", id="date-from-number"),
        pytest.param("TIMESTAMP", "2016-01-01T25:00:00", "not a real date", id="ts-hour"),
        pytest.param("TIMESTAMP", "yesterday", "expected an ISO 8601", id="ts-text"),
        pytest.param("TIMESTAMP_NTZ", "2016-01-01T08:00:00Z", "no time zone", id="ntz-offset"),
    ],
)
def test_bad_values_name_the_parameter_and_why(type_: str, given: object, why: str) -> None:
    query = query_of(param("zip", type_))

    with pytest.raises(ParamError) as caught:
        bind_params(query, {"zip": given})

    assert caught.value.param == "zip"
    assert str(caught.value).startswith(f"parameter 'zip' ({type_}): ")
    assert why in str(caught.value)


def test_unknown_parameter_is_refused() -> None:
    query = query_of(param("zip"))

    with pytest.raises(ParamError, match="unknown parameter 'zipp'") as caught:
        bind_params(query, {"zip": 1, "zipp": 2})

    assert caught.value.param == "zipp"


def test_missing_required_parameter_is_refused() -> None:
    query = query_of(param("zip"), param("limit", required=False, default="10"))

    with pytest.raises(ParamError, match="parameter 'zip' is required") as caught:
        bind_params(query, {"limit": 5})

    assert caught.value.param == "zip"


def test_null_for_a_required_parameter_is_refused() -> None:
    query = query_of(param("zip"))

    with pytest.raises(ParamError, match="required, not null"):
        bind_params(query, {"zip": None})


def test_defaults_fill_in_and_given_values_win() -> None:
    query = query_of(
        param("limit", required=False, default="10"),
        param("since", "DATE", required=False, default="2016-01-01"),
    )

    bound = bind_params(query, {"limit": 3})

    assert bound == {
        "limit": {"value": "3", "type": "INT"},
        "since": {"value": "2016-01-01", "type": "DATE"},
    }


def test_optional_parameter_without_default_binds_null() -> None:
    query = query_of(param("vendor", "STRING", required=False))

    assert bind_params(query, {}) == {"vendor": {"value": None, "type": "STRING"}}


def test_explicit_null_overrides_a_default() -> None:
    query = query_of(param("limit", required=False, default="10"))

    assert bind_params(query, {"limit": None}) == {"limit": {"value": None, "type": "INT"}}
