"""What may be cached, under which key, and what a request's Cache-Control asks."""

from __future__ import annotations

import pytest

from dbx_backend.engine.cache_control import (
    CacheRequest,
    InvalidCacheControl,
    parse_cache_control,
)
from dbx_backend.engine.cache_key import CacheKeyParts, cache_key
from dbx_backend.engine.sqlfacts import sql_facts


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT rand()", id="rand"),
        pytest.param("SELECT random()", id="random"),
        pytest.param("SELECT randn(7)", id="randn"),
        pytest.param("SELECT uuid()", id="uuid"),
        pytest.param("SELECT shuffle(array(1, 2))", id="shuffle"),
        pytest.param("SELECT now()", id="now"),
        pytest.param("SELECT current_timestamp()", id="current_timestamp-call"),
        pytest.param("SELECT current_timestamp", id="current_timestamp-keyword"),
        pytest.param("SELECT current_date", id="current_date"),
        pytest.param("SELECT curdate()", id="curdate"),
        pytest.param("SELECT getdate()", id="getdate"),
        pytest.param("SELECT unix_timestamp()", id="unix_timestamp-now"),
        pytest.param("SELECT localtimestamp()", id="localtimestamp"),
        pytest.param("SELECT current_timezone()", id="current_timezone"),
        pytest.param("SELECT current_user()", id="current_user"),
        pytest.param("SELECT session_user()", id="session_user"),
        pytest.param("SELECT is_member('admins')", id="is_member"),
        pytest.param("SELECT secret('scope', 'key')", id="secret"),
        pytest.param("SELECT ai_query('model', 'hi')", id="ai_query"),
        pytest.param("SELECT http_request('https://x')", id="http_request"),
        pytest.param("SELECT monotonically_increasing_id()", id="monotonically_increasing_id"),
        pytest.param("SELECT input_file_name()", id="input_file_name"),
        pytest.param("SELECT * FROM t TABLESAMPLE (10 PERCENT)", id="tablesample"),
        pytest.param("SELECT x FROM t WHERE d < NOW()", id="upper-case-in-where"),
        pytest.param("WITH a AS (SELECT rand() AS r) SELECT * FROM a", id="inside-a-common-table"),
        pytest.param("SELECT count(*) FROM t WHERE id IN (SELECT uuid())", id="in-a-subquery"),
    ],
)
def test_non_deterministic_statements_are_never_cached(sql: str) -> None:
    facts = sql_facts(sql)

    assert not facts.deterministic
    assert not facts.cacheable
    assert facts.reason.startswith("it calls")


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT 1", id="literal"),
        pytest.param("SELECT zip, count(*) FROM trips GROUP BY zip", id="aggregate"),
        pytest.param("SELECT date_add(d, 1) FROM t", id="date-arithmetic"),
        pytest.param("SELECT unix_timestamp('2024-01-01')", id="unix_timestamp-of-a-value"),
        pytest.param("SELECT * FROM t WHERE x = :p", id="named-parameter"),
        pytest.param("SELECT current_catalog(), current_schema()", id="catalog-is-in-the-key"),
        pytest.param("SELECT 'rand()' AS text", id="function-name-in-a-string"),
    ],
)
def test_deterministic_reads_are_cacheable(sql: str) -> None:
    assert sql_facts(sql).cacheable


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("INSERT INTO t VALUES (1)", id="insert"),
        pytest.param("DELETE FROM t", id="delete"),
        pytest.param("SELECT 1; SELECT 2", id="several-statements"),
        pytest.param("SELEC 1 FROM", id="unparsable"),
    ],
)
def test_what_is_not_a_single_read_is_never_cached(sql: str) -> None:
    assert not sql_facts(sql).cacheable


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("select 1", "SELECT 1", id="keyword-case"),
        pytest.param("SELECT  a,\n\tb FROM t", "SELECT a, b FROM t", id="whitespace"),
        pytest.param("SELECT a FROM t -- why\n", "SELECT a FROM t", id="line-comment"),
        pytest.param("/* dashboard 3 */ SELECT a FROM t", "SELECT a FROM t", id="block-comment"),
    ],
)
def test_texts_that_differ_only_in_form_share_a_key(first: str, second: str) -> None:
    assert cache_key(CacheKeyParts(first)) == cache_key(CacheKeyParts(second))


BASE = CacheKeyParts(
    "SELECT * FROM t WHERE x = :x",
    params=(("x", "1", "BIGINT"),),
    catalog="main",
    schema="sales",
    row_limit=100,
    warehouse_id="wh1",
)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(
            CacheKeyParts(
                "SELECT * FROM t WHERE x = :x",
                params=BASE.params,
                catalog="main",
                schema="sales",
                row_limit=100,
                warehouse_id="wh1",
                caller="k1",
            ),
            id="caller",
        ),
        pytest.param(
            CacheKeyParts(
                "SELECT * FROM t WHERE x = :y",
                params=BASE.params,
                catalog="main",
                schema="sales",
                row_limit=100,
                warehouse_id="wh1",
            ),
            id="text",
        ),
        pytest.param(
            CacheKeyParts(
                BASE.sql,
                params=(("x", "2", "BIGINT"),),
                catalog="main",
                schema="sales",
                row_limit=100,
                warehouse_id="wh1",
            ),
            id="param-value",
        ),
        pytest.param(
            CacheKeyParts(
                BASE.sql,
                params=(("x", "1", "STRING"),),
                catalog="main",
                schema="sales",
                row_limit=100,
                warehouse_id="wh1",
            ),
            id="param-type",
        ),
        pytest.param(
            CacheKeyParts(
                BASE.sql,
                params=BASE.params,
                catalog="dev",
                schema="sales",
                row_limit=100,
                warehouse_id="wh1",
            ),
            id="catalog",
        ),
        pytest.param(
            CacheKeyParts(
                BASE.sql,
                params=BASE.params,
                catalog="main",
                schema="hr",
                row_limit=100,
                warehouse_id="wh1",
            ),
            id="schema",
        ),
        pytest.param(
            CacheKeyParts(
                BASE.sql,
                params=BASE.params,
                catalog="main",
                schema="sales",
                row_limit=10,
                warehouse_id="wh1",
            ),
            id="row_limit",
        ),
        pytest.param(
            CacheKeyParts(
                BASE.sql,
                params=BASE.params,
                catalog="main",
                schema="sales",
                row_limit=100,
                long_as_string=True,
                warehouse_id="wh1",
            ),
            id="long_as_string",
        ),
        pytest.param(
            CacheKeyParts(
                BASE.sql,
                params=BASE.params,
                catalog="main",
                schema="sales",
                row_limit=100,
                warehouse_id="wh2",
            ),
            id="warehouse",
        ),
    ],
)
def test_everything_that_changes_the_result_changes_the_key(other: CacheKeyParts) -> None:
    assert cache_key(other) != cache_key(BASE)


def test_parameter_order_does_not_change_the_key() -> None:
    one = CacheKeyParts("SELECT :a, :b", params=(("a", "1", "INT"), ("b", "2", "INT")))
    other = CacheKeyParts("SELECT :a, :b", params=(("b", "2", "INT"), ("a", "1", "INT")))

    assert cache_key(one) == cache_key(other)


def test_unparsable_text_is_keyed_as_written() -> None:
    assert cache_key(CacheKeyParts("SELEC 1 FROM")) != cache_key(CacheKeyParts("selec 1 from"))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, CacheRequest(), id="absent"),
        pytest.param("", CacheRequest(), id="empty"),
        pytest.param("no-cache", CacheRequest(no_cache=True), id="no-cache"),
        pytest.param("no-store", CacheRequest(no_store=True), id="no-store"),
        pytest.param("max-age=30", CacheRequest(max_age_s=30), id="max-age"),
        pytest.param("only-if-cached", CacheRequest(only_if_cached=True), id="only-if-cached"),
        pytest.param(
            "Max-Age=10, ONLY-IF-CACHED",
            CacheRequest(max_age_s=10, only_if_cached=True),
            id="case-insensitive",
        ),
        pytest.param("max-age=60, max-age=5", CacheRequest(max_age_s=5), id="strictest-max-age"),
        pytest.param('max-age="7"', CacheRequest(max_age_s=7), id="quoted-value"),
        pytest.param("private, must-revalidate", CacheRequest(), id="unknown-directives-ignored"),
    ],
)
def test_cache_control_is_read(header: str | None, expected: CacheRequest) -> None:
    assert parse_cache_control(header) == expected


@pytest.mark.parametrize("header", ["max-age=soon", "max-age=-1", "max-age", "max-age=1.5"])
def test_a_malformed_max_age_is_refused_naming_it(header: str) -> None:
    with pytest.raises(InvalidCacheControl, match="max-age"):
        parse_cache_control(header)
