"""Databricks SQL to DuckDB SQL, with `:name` markers turned into typed bind parameters.

sqlglot parses the Databricks dialect and writes DuckDB's. Each marker becomes
`CAST($name AS <declared type>)` with the value bound separately, so a value is never
spliced into the SQL text and `:` inside strings, comments or `::` casts is left alone.
`sleep_ms(n)` calls are taken out and performed by the executor as an interruptible wait.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from dbx_backend.localwarehouse.errors import SqlError, syntax_error, unbound_parameter
from dbx_backend.localwarehouse.request import Parameter

# sqlglot logs a warning for each statement it can only pass through as a command (SHOW ...).
logging.getLogger("sqlglot").setLevel(logging.ERROR)

SLEEP_FUNCTION = "sleep_ms"


@dataclass(frozen=True, slots=True)
class Translated:
    """DuckDB SQL, its bind values, and how long the statement asked to sleep."""

    sql: str
    params: dict[str, str | None] = field(default_factory=dict)
    sleep_ms: int = 0


def translate(statement: str, parameters: Sequence[Parameter] = ()) -> Translated:
    """Translate one Databricks SQL statement; raise `SqlError` as the warehouse would fail it."""
    tree = _parse_one(statement)
    if isinstance(tree, exp.Command):
        # Statements sqlglot cannot model (SHOW ..., PRAGMA ...) go to DuckDB verbatim.
        if ":" in statement and any(f":{p.name}" in statement for p in parameters):
            raise SqlError("UNSUPPORTED_FEATURE", "Parameters are not supported here.", "0A000")
        return Translated(statement)
    by_name = {p.name: p for p in parameters}
    used: dict[str, str | None] = {}

    def bind(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Placeholder):
            name = node.name
            if not name or name not in by_name:
                raise unbound_parameter(name or "?")
            used[name] = by_name[name].value
            return exp.cast(exp.Placeholder(this=name), _parameter_type(by_name[name]))
        return node

    tree = tree.transform(bind)
    sleep_ms = 0
    for call in list(tree.find_all(exp.Anonymous)):
        if call.name.lower() == SLEEP_FUNCTION:
            millis = _sleep_argument(call)
            sleep_ms += millis
            value: exp.Expr = exp.cast(exp.Literal.number(millis), "BIGINT")
            if isinstance(call.parent, exp.Select):
                value = exp.alias_(value, f"{call.name}({millis})", quoted=True)
            call.replace(value)
    return Translated(tree.sql(dialect="duckdb"), used, sleep_ms)


def _parse_one(statement: str) -> exp.Expr:
    try:
        trees = [tree for tree in sqlglot.parse(statement, read="databricks") if tree is not None]
    except ParseError as exc:
        error = exc.errors[0] if exc.errors else {}
        raise syntax_error(str(error.get("highlight") or "end of input")) from None
    except TokenError:
        raise syntax_error("end of input") from None
    if not trees:
        raise syntax_error("end of input")
    if len(trees) > 1:
        raise syntax_error(";")  # the API runs exactly one statement
    return trees[0]


def _parameter_type(parameter: Parameter) -> exp.DataType:
    try:
        data_type = exp.DataType.build(parameter.type, dialect="databricks")
    except (ParseError, TokenError, ValueError):
        data_type = None
    if data_type is None or data_type.is_type(*exp.DataType.NESTED_TYPES):
        raise SqlError(
            "INVALID_PARAMETER_MARKER_VALUE",
            f"The parameter `{parameter.name}` has an unsupported type `{parameter.type}`.",
            "22023",
        )
    return data_type


def _sleep_argument(call: exp.Anonymous) -> int:
    args = call.expressions
    if len(args) != 1 or not isinstance(args[0], exp.Literal) or args[0].is_string:
        raise SqlError(
            "WRONG_NUM_ARGS",
            f"`{SLEEP_FUNCTION}` takes one integer literal: milliseconds to sleep.",
            "42605",
        )
    return max(0, int(float(args[0].name)))
