"""The read-only SQL policy: which statements are reads, and how refusals are worded."""

from __future__ import annotations

import logging

import pytest

from dbx_backend.sqlpolicy import (
    EmptySql,
    SqlPolicyError,
    StatementKind,
    StatementNotAllowed,
    UnparsableSql,
    check_read_only,
    classify_statement,
)

R = True  # read_only
W = False

CLASSIFICATION = [
    # Plain reads.
    pytest.param("SELECT 1", "SELECT", R, id="select-literal"),
    pytest.param("select * from t", "SELECT", R, id="select-lower-case"),
    pytest.param("sElEcT a FrOm t WhErE b = 1", "SELECT", R, id="select-mixed-case"),
    pytest.param("  \n\tSELECT 1  \n", "SELECT", R, id="select-surrounding-whitespace"),
    pytest.param("SELECT 1;", "SELECT", R, id="select-trailing-semicolon"),
    pytest.param("SELECT 1 ;\n  -- done\n", "SELECT", R, id="select-semicolon-then-comment"),
    pytest.param(";SELECT 1", "SELECT", R, id="select-leading-semicolon"),
    pytest.param("SELECT * FROM samples.nyctaxi.trips", "SELECT", R, id="three-part-name"),
    pytest.param("SELECT * FROM `cat`.`my schema`.`t`", "SELECT", R, id="backtick-three-part"),
    pytest.param("SELECT * FROM `my;table`", "SELECT", R, id="semicolon-in-backticks"),
    pytest.param("SELECT `a``;DROP TABLE t` FROM t", "SELECT", R, id="escaped-backtick-name"),
    pytest.param("SELECT 1 AS `select`, 2 AS `drop`", "SELECT", R, id="keyword-identifiers"),
    pytest.param("FROM t SELECT a", "SELECT", R, id="from-first-select"),
    pytest.param("(SELECT 1)", "SELECT", R, id="parenthesised-select"),
    pytest.param("SELECT * FROM t WHERE a IN (SELECT b FROM u)", "SELECT", R, id="subquery"),
    pytest.param(
        "SELECT * FROM (SELECT a FROM (SELECT a FROM t) x) y", "SELECT", R, id="nested-subqueries"
    ),
    pytest.param(
        "SELECT x FROM t GROUP BY ALL ORDER BY 1 LIMIT 10", "SELECT", R, id="group-by-all"
    ),
    pytest.param("SELECT * EXCEPT (a) FROM t", "SELECT", R, id="star-except"),
    pytest.param(
        "SELECT a, row_number() OVER (PARTITION BY b ORDER BY c DESC) AS rn FROM t",
        "SELECT",
        R,
        id="window-function",
    ),
    pytest.param(
        "SELECT * FROM t QUALIFY row_number() OVER (ORDER BY a) = 1", "SELECT", R, id="qualify"
    ),
    pytest.param(
        "SELECT t.a, x.y FROM t LATERAL VIEW explode(t.items) x AS y",
        "SELECT",
        R,
        id="lateral-view",
    ),
    pytest.param("SELECT * FROM t PIVOT (sum(a) FOR b IN (1, 2))", "SELECT", R, id="pivot"),
    pytest.param("SELECT transform(xs, x -> x + 1) FROM t", "SELECT", R, id="lambda"),
    pytest.param("SELECT v:price.amount FROM t", "SELECT", R, id="variant-path"),
    pytest.param("SELECT * FROM t VERSION AS OF 3", "SELECT", R, id="time-travel"),
    pytest.param("SELECT * FROM t TABLESAMPLE (10 PERCENT)", "SELECT", R, id="tablesample"),
    pytest.param("SELECT * FROM read_files('/p/x.csv')", "SELECT", R, id="table-function"),
    pytest.param("SELECT * FROM VALUES (1), (2) AS v(a)", "SELECT", R, id="select-from-values"),
    pytest.param(
        "SELECT CAST(x AS DECIMAL(10, 2)), x::date FROM t", "SELECT", R, id="casts-both-forms"
    ),
    # Comments and strings that hide keywords or semicolons.
    pytest.param("/* DROP TABLE t */ SELECT 1", "SELECT", R, id="block-comment-hides-drop"),
    pytest.param("SELECT 1 -- ; DROP TABLE x", "SELECT", R, id="line-comment-hides-drop"),
    pytest.param("SELECT 1 /* /* */ ; DROP TABLE t */", "SELECT", R, id="nested-comment"),
    pytest.param("SELECT /*+ BROADCAST(u) */ * FROM t JOIN u", "SELECT", R, id="hint"),
    pytest.param("SELECT ';DROP TABLE x' AS s", "SELECT", R, id="semicolon-in-string"),
    pytest.param('SELECT "DELETE FROM t; " AS s', "SELECT", R, id="double-quoted-string"),
    pytest.param("SELECT 'it\\'s; DROP TABLE t'", "SELECT", R, id="escaped-quote-in-string"),
    pytest.param("SELECT * FROM t WHERE s LIKE '%;%'", "SELECT", R, id="like-semicolon"),
    pytest.param("SELECT r'\\d+;' AS re", "SELECT", R, id="raw-string"),
    # Named parameter markers, as the service sends them.
    pytest.param("SELECT * FROM t WHERE a = :p", "SELECT", R, id="param-marker"),
    pytest.param("SELECT * FROM t WHERE a=:p AND b IN (:q, :r)", "SELECT", R, id="param-markers"),
    pytest.param("SELECT * FROM t LIMIT :n", "SELECT", R, id="param-limit"),
    pytest.param("SELECT * FROM t WHERE d = :d::date", "SELECT", R, id="param-cast"),
    pytest.param("SELECT * FROM IDENTIFIER(:tbl)", "SELECT", R, id="identifier-clause"),
    pytest.param(
        "SELECT * FROM IDENTIFIER(:schema || '.trips')", "SELECT", R, id="identifier-concat"
    ),
    # CTEs, VALUES and set operations.
    pytest.param("WITH a AS (SELECT 1 AS x) SELECT x FROM a", "SELECT", R, id="cte"),
    pytest.param(
        "WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b", "SELECT", R, id="ctes"
    ),
    pytest.param(
        "WITH a AS (SELECT 1) SELECT * FROM a UNION ALL SELECT 2", "UNION", R, id="cte-union"
    ),
    pytest.param("VALUES (1, 'a'), (2, 'b')", "VALUES", R, id="values"),
    pytest.param("SELECT 1 UNION SELECT 2", "UNION", R, id="union"),
    pytest.param("(SELECT 1) UNION ALL (SELECT 2) ORDER BY 1", "UNION", R, id="union-all"),
    pytest.param("SELECT a FROM t INTERSECT SELECT a FROM u", "INTERSECT", R, id="intersect"),
    pytest.param("SELECT a FROM t EXCEPT SELECT a FROM u", "EXCEPT", R, id="except"),
    # SHOW, DESCRIBE, EXPLAIN.
    pytest.param("SHOW TABLES IN samples.nyctaxi", "SHOW", R, id="show-tables-in"),
    pytest.param("show schemas", "SHOW", R, id="show-schemas"),
    pytest.param("SHOW CATALOGS", "SHOW", R, id="show-catalogs"),
    pytest.param("SHOW COLUMNS IN samples.nyctaxi.trips", "SHOW", R, id="show-columns"),
    pytest.param("SHOW CREATE TABLE t", "SHOW", R, id="show-create-table"),
    pytest.param("SHOW GRANTS ON TABLE t", "SHOW", R, id="show-grants"),
    pytest.param("SHOW TABLES LIKE 'a;b'", "SHOW", R, id="show-semicolon-in-pattern"),
    pytest.param("DESCRIBE TABLE samples.nyctaxi.trips", "DESCRIBE", R, id="describe-table"),
    pytest.param("DESC t", "DESCRIBE", R, id="desc"),
    pytest.param("DESCRIBE TABLE EXTENDED t", "DESCRIBE", R, id="describe-extended"),
    pytest.param("DESCRIBE HISTORY t", "DESCRIBE", R, id="describe-history"),
    pytest.param("DESCRIBE DETAIL t", "DESCRIBE", R, id="describe-detail"),
    pytest.param("DESCRIBE CATALOG samples", "DESCRIBE", R, id="describe-catalog"),
    pytest.param("DESCRIBE FUNCTION abs", "DESCRIBE", R, id="describe-function"),
    pytest.param("DESCRIBE QUERY SELECT * FROM t", "DESCRIBE", R, id="describe-query"),
    pytest.param("EXPLAIN SELECT * FROM t", "EXPLAIN", R, id="explain-select"),
    pytest.param("EXPLAIN EXTENDED SELECT 1", "EXPLAIN", R, id="explain-extended"),
    pytest.param(
        "explain formatted with a as (select 1) select * from a", "EXPLAIN", R, id="explain-cte"
    ),
    pytest.param("EXPLAIN /* c */ COST SELECT 1", "EXPLAIN", R, id="explain-comment-mode"),
    # Data changes.
    pytest.param("INSERT INTO t VALUES (1)", "INSERT", W, id="insert-values"),
    pytest.param("insert into t select * from u", "INSERT", W, id="insert-select"),
    pytest.param("INSERT OVERWRITE t SELECT 1", "INSERT OVERWRITE", W, id="insert-overwrite"),
    pytest.param(
        "INSERT OVERWRITE TABLE t SELECT 1", "INSERT OVERWRITE", W, id="insert-overwrite-table"
    ),
    pytest.param(
        "INSERT INTO t REPLACE WHERE d = '2024-01-01' SELECT * FROM u",
        "INSERT",
        W,
        id="insert-replace-where",
    ),
    pytest.param("UPDATE t SET a = 1 WHERE b = :b", "UPDATE", W, id="update"),
    pytest.param("DELETE FROM t WHERE a = 1", "DELETE", W, id="delete"),
    pytest.param(
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET *",
        "MERGE",
        W,
        id="merge",
    ),
    pytest.param("COPY INTO t FROM '/p' FILEFORMAT = CSV", "COPY INTO", W, id="copy-into"),
    pytest.param("TRUNCATE TABLE t", "TRUNCATE TABLE", W, id="truncate"),
    # Writes hidden inside reads.
    pytest.param("WITH d AS (DELETE FROM t) SELECT 1", "DELETE", W, id="cte-wrapping-delete"),
    pytest.param(
        "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", "INSERT", W, id="cte-then-insert"
    ),
    pytest.param(
        "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x",
        "INSERT",
        W,
        id="cte-wrapping-insert",
    ),
    pytest.param("SELECT * INTO t FROM s", "SELECT INTO", W, id="select-into"),
    pytest.param("SELECT 1 UNION (SELECT 2 INTO x)", "SELECT INTO", W, id="union-select-into"),
    pytest.param(
        "WITH a AS (SELECT r'\\') INSERT INTO t SELECT 1 -- ') SELECT 2",
        "INSERT",
        W,
        id="raw-string-cannot-hide-insert",
    ),
    # Definitions.
    pytest.param("CREATE TABLE t AS SELECT 1", "CREATE TABLE", W, id="ctas"),
    pytest.param("CREATE TABLE t (a INT)", "CREATE TABLE", W, id="create-table"),
    pytest.param("CREATE VIEW v AS SELECT 1", "CREATE VIEW", W, id="create-view"),
    pytest.param(
        "CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "CREATE VIEW", W, id="create-temp-view"
    ),
    pytest.param("CREATE SCHEMA s", "CREATE SCHEMA", W, id="create-schema"),
    pytest.param("CREATE CATALOG c", "CREATE", W, id="create-catalog"),
    pytest.param("CREATE TABLE t DEEP CLONE s", "CREATE", W, id="deep-clone"),
    pytest.param("DROP TABLE t", "DROP TABLE", W, id="drop-table"),
    pytest.param("drop view if exists v", "DROP VIEW", W, id="drop-view"),
    pytest.param("DROP SCHEMA s CASCADE", "DROP SCHEMA", W, id="drop-schema"),
    pytest.param("ALTER TABLE t ADD COLUMN c INT", "ALTER TABLE", W, id="alter-table"),
    pytest.param("COMMENT ON TABLE t IS 'x'", "COMMENT ON", W, id="comment-on"),
    pytest.param("UNDROP TABLE t", "UNDROP", W, id="undrop"),
    # Permissions.
    pytest.param("GRANT SELECT ON TABLE t TO `someone`", "GRANT", W, id="grant"),
    pytest.param("REVOKE SELECT ON TABLE t FROM `someone`", "REVOKE", W, id="revoke"),
    # Session changes.
    pytest.param("USE CATALOG c", "USE CATALOG", W, id="use-catalog"),
    pytest.param("USE SCHEMA s", "USE SCHEMA", W, id="use-schema"),
    pytest.param("USE s", "USE", W, id="use"),
    pytest.param("SET spark.sql.ansi.enabled = true", "SET", W, id="set-conf"),
    pytest.param("SET TIME ZONE 'UTC'", "SET", W, id="set-time-zone"),
    pytest.param("SET VAR x = 1", "SET", W, id="set-var"),
    pytest.param("RESET", "RESET", W, id="reset"),
    pytest.param("RESET spark.sql.ansi.enabled", "RESET", W, id="reset-key"),
    pytest.param("DECLARE VARIABLE x INT", "DECLARE", W, id="declare"),
    # Procedures and dynamic SQL.
    pytest.param("CALL my_proc(1)", "CALL", W, id="call"),
    pytest.param("EXECUTE IMMEDIATE 'DROP TABLE t'", "EXECUTE IMMEDIATE", W, id="execute"),
    pytest.param("BEGIN SELECT 1; END", "MULTIPLE STATEMENTS", W, id="compound"),
    # Table maintenance.
    pytest.param("REFRESH TABLE t", "REFRESH", W, id="refresh-table"),
    pytest.param("REFRESH STREAMING TABLE st", "REFRESH", W, id="refresh-streaming"),
    pytest.param("OPTIMIZE t", "OPTIMIZE", W, id="optimize"),
    pytest.param("OPTIMIZE t ZORDER BY (a)", "OPTIMIZE", W, id="optimize-zorder"),
    pytest.param("VACUUM t RETAIN 168 HOURS", "VACUUM", W, id="vacuum"),
    pytest.param("MSCK REPAIR TABLE t", "MSCK REPAIR TABLE", W, id="msck"),
    pytest.param("CACHE TABLE t", "CACHE TABLE", W, id="cache-table"),
    pytest.param("CACHE LAZY TABLE t AS SELECT 1", "CACHE TABLE", W, id="cache-lazy"),
    pytest.param("UNCACHE TABLE t", "UNCACHE TABLE", W, id="uncache-table"),
    pytest.param("CLEAR CACHE", "CLEAR CACHE", W, id="clear-cache"),
    pytest.param("ANALYZE TABLE t COMPUTE STATISTICS", "ANALYZE TABLE", W, id="analyze"),
    pytest.param("RESTORE TABLE t TO VERSION AS OF 1", "RESTORE", W, id="restore"),
    pytest.param("ADD JAR '/tmp/x.jar'", "ADD", W, id="add-jar"),
    pytest.param("LIST '/Volumes/c/s/v'", "LIST", W, id="list"),
    pytest.param("TABLE t", "TABLE", W, id="table-statement-is-not-modelled"),
    # EXPLAIN of a write.
    pytest.param("EXPLAIN INSERT INTO t VALUES (1)", "EXPLAIN INSERT", W, id="explain-insert"),
    pytest.param("explain codegen delete from t", "EXPLAIN DELETE", W, id="explain-delete"),
    pytest.param("EXPLAIN DROP TABLE t", "EXPLAIN DROP TABLE", W, id="explain-drop"),
    pytest.param("DESCRIBE QUERY DELETE FROM t", "DESCRIBE DELETE", W, id="describe-query-delete"),
    # Several statements.
    pytest.param("SELECT 1; SELECT 2", "MULTIPLE STATEMENTS", W, id="two-reads"),
    pytest.param("SELECT 1; DROP TABLE t", "MULTIPLE STATEMENTS", W, id="read-then-drop"),
    pytest.param("SELECT 1\n;\nDROP TABLE t;", "MULTIPLE STATEMENTS", W, id="across-lines"),
    pytest.param("SHOW TABLES; DROP TABLE t", "MULTIPLE STATEMENTS", W, id="show-then-drop"),
    pytest.param(
        "SHOW TABLES -- x\n; DROP TABLE t", "MULTIPLE STATEMENTS", W, id="show-comment-then-drop"
    ),
    pytest.param(
        "EXPLAIN SELECT 1; DROP TABLE t", "MULTIPLE STATEMENTS", W, id="explain-then-drop"
    ),
    pytest.param(
        "SELECT 'a\\\\'; DROP TABLE t --'", "MULTIPLE STATEMENTS", W, id="escaped-backslash"
    ),
]


@pytest.mark.parametrize(("sql", "name", "read_only"), CLASSIFICATION)
def test_statement_is_classified(sql: str, name: str, read_only: bool) -> None:
    assert classify_statement(sql) == StatementKind(name, read_only)


def test_the_table_covers_at_least_eighty_statements() -> None:
    assert len(CLASSIFICATION) >= 80


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT * FROM t WHERE a = :a", id="select"),
        pytest.param("SHOW TABLES IN samples.nyctaxi", id="show"),
        pytest.param("EXPLAIN SELECT 1", id="explain"),
    ],
)
def test_check_read_only_returns_the_kind_of_a_read(sql: str) -> None:
    assert check_read_only(sql) == classify_statement(sql)


def test_check_read_only_names_the_refused_kind() -> None:
    with pytest.raises(StatementNotAllowed) as refused:
        check_read_only("INSERT OVERWRITE t SELECT 1")

    assert refused.value.kind == StatementKind("INSERT OVERWRITE", read_only=False)
    assert str(refused.value) == (
        "INSERT OVERWRITE statements are not allowed: this service is read-only"
    )


def test_several_statements_are_refused_as_such() -> None:
    with pytest.raises(StatementNotAllowed) as refused:
        check_read_only("SELECT 1; SELECT 2")

    assert refused.value.kind.name == "MULTIPLE STATEMENTS"
    assert str(refused.value).startswith("MULTIPLE STATEMENTS are not allowed")


@pytest.mark.parametrize(
    ("sql", "line", "column"),
    [
        pytest.param("SELEC 1", 1, 7, id="misspelt-keyword"),
        pytest.param("SELECT 1 1", 1, 10, id="stray-token"),
        pytest.param("SELECT a,\n  b\nFROM", 3, 5, id="missing-table-at-end"),
        pytest.param("select *\nfrom t\nwhere a = (", 3, 11, id="open-parenthesis"),
        pytest.param("SELECT (1", 1, 9, id="unclosed-parenthesis"),
        pytest.param("SELECT 'abc", 1, 8, id="unterminated-string"),
        pytest.param("SELECT 1,\n  `ab", 2, 3, id="unterminated-identifier"),
        pytest.param("SELECT 1 /* never closed", 1, 10, id="unterminated-comment"),
        pytest.param("foo bar", 1, 1, id="not-a-statement"),
        pytest.param("EXPLAIN", 1, 8, id="explain-nothing"),
        pytest.param("SHOW", 1, 5, id="show-nothing"),
        pytest.param("DESCRIBE t a", 1, 12, id="describe-junk"),
    ],
)
def test_unparsable_sql_says_where_parsing_stopped(sql: str, line: int, column: int) -> None:
    with pytest.raises(UnparsableSql) as unparsable:
        classify_statement(sql)

    assert (unparsable.value.line, unparsable.value.column) == (line, column)
    assert str(unparsable.value).startswith(
        f"could not parse the SQL near line {line}, column {column}: "
    )


def test_unparsable_message_names_the_unexpected_token() -> None:
    with pytest.raises(UnparsableSql) as unparsable:
        classify_statement("SELECT a b c FROM t")

    assert str(unparsable.value) == "could not parse the SQL near line 1, column 12: unexpected 'c'"


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("", id="empty"),
        pytest.param("  \n\t ", id="whitespace"),
        pytest.param("-- just a comment", id="line-comment"),
        pytest.param("/* block */ ;", id="comment-and-semicolon"),
        pytest.param(";;", id="semicolons"),
    ],
)
def test_sql_without_a_statement_is_empty(sql: str) -> None:
    with pytest.raises(EmptySql, match="contains no statement"):
        check_read_only(sql)


def test_deeply_nested_sql_is_refused_as_unparsable() -> None:
    sql = "SELECT " + "(" * 300 + "1" + ")" * 300

    with pytest.raises(UnparsableSql, match="nested too deeply"):
        check_read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param(
            "SELECT * FROM t WHERE token = 'dapi0123456789abcdef0123456789abcdef' AND (",
            id="unparsable-after-long-literal",
        ),
        pytest.param(
            "SELECT 'dapi0123456789abcdef0123456789abcdef0123456789abcdef' 'x' FROM",
            id="unparsable-at-end",
        ),
        pytest.param(
            "SELECT 'dapi0123456789abcdef0123456789abcdef0123456789abcdef' oops oops2",
            id="unexpected-token",
        ),
        pytest.param(
            "SELECT 1 FROM t WHERE 'dapi0123456789abcdef0123456789abcdef0123456789abcdef",
            id="unterminated-long-string",
        ),
        pytest.param(
            "SELECT 1 FROM t WHERE a = `dapi0123456789abcdef0123456789abcdef0123456789abcdef` (",
            id="long-identifier",
        ),
        pytest.param(
            "INSERT INTO t VALUES ('dapi0123456789abcdef0123456789abcdef0123456789abcdef')",
            id="refused-write",
        ),
    ],
)
def test_messages_quote_at_most_a_short_fragment_of_the_sql(sql: str) -> None:
    with pytest.raises(SqlPolicyError) as refused:
        check_read_only(sql)

    message = str(refused.value)
    windows = {sql[i : i + 21] for i in range(len(sql) - 20)}
    assert not any(window in message for window in windows), message
    assert "dapi0123456789abcdef0123" not in repr(refused.value)


def test_long_unexpected_token_is_cut_short() -> None:
    sql = "SELECT 1 a " + "x" * 200

    with pytest.raises(UnparsableSql) as unparsable:
        classify_statement(sql)

    assert str(unparsable.value).endswith("unexpected 'xxxxxxxxxxxxxxxxx...'")


def test_classifying_opaque_commands_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    classify_statement("OPTIMIZE secret_table ZORDER BY (secret_column)")
    classify_statement("SHOW TABLES IN secret_schema")

    assert "secret" not in caplog.text


def test_both_refusals_share_the_policy_base() -> None:
    assert issubclass(StatementNotAllowed, SqlPolicyError)
    assert issubclass(UnparsableSql, SqlPolicyError)
    assert issubclass(EmptySql, UnparsableSql)
