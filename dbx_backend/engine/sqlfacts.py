"""What the result cache needs to know about a statement's text, worked out once per text.

* the canonical text: sqlglot's rendering in the Databricks dialect, so whitespace, comments
  and keyword case do not split the cache (the raw text when it does not parse);
* whether it is deterministic: Databricks' own result cache skips statements that call
  non-deterministic functions, and so do we (the table below);
* whether it only reads (READ_ONLY=false lets writes through; they are never cached).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from dbx_backend.sqlpolicy import SqlPolicyError, classify_statement

_DIALECT = "databricks"

# Functions whose answer changes from one call to the next, or with who calls: randomness,
# the clock, the caller, secrets, files being read, model and network calls. Names as sqlglot
# renders them (NOW, GETDATE and UNIX_TIMESTAMP() become CURRENT_TIMESTAMP).
NON_DETERMINISTIC = frozenset(
    {
        # randomness
        "RAND", "RANDOM", "RANDN", "UUID", "SHUFFLE", "UNIFORM", "RANDSTR",
        "MONOTONICALLY_INCREASING_ID", "SPARK_PARTITION_ID",
        # the clock
        "CURRENT_TIMESTAMP", "NOW", "GETDATE", "SYSDATE", "CURRENT_DATE", "CURDATE",
        "CURRENT_TIME", "LOCALTIMESTAMP", "CURRENT_TIMEZONE",
        # the caller
        "CURRENT_USER", "USER", "SESSION_USER", "IS_MEMBER", "IS_ACCOUNT_GROUP_MEMBER",
        "CURRENT_GROUPS",
        # secrets, files, the network, reflection
        "SECRET", "TRY_SECRET", "INPUT_FILE_NAME", "INPUT_FILE_BLOCK_START",
        "INPUT_FILE_BLOCK_LENGTH", "HTTP_REQUEST", "REFLECT", "JAVA_METHOD", "TRY_REFLECT",
        "VECTOR_SEARCH",
    }
)  # fmt: skip
# Every AI function (ai_query, ai_gen, ai_summarize, ...) asks a model: never the same twice.
NON_DETERMINISTIC_PREFIXES = ("AI_",)


@dataclass(frozen=True, slots=True)
class SqlFacts:
    """The canonical text of a statement, and whether its result may be cached."""

    canonical: str
    parsed: bool
    deterministic: bool
    read_only: bool
    reason: str = ""  # why it may not be cached, for the log

    @property
    def cacheable(self) -> bool:
        """True when the same text always gives the same rows (until the data changes)."""
        return self.deterministic and self.read_only


def function_name(node: exp.Func) -> str:
    """The SQL name of a function call, upper case, as sqlglot knows it or as written."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).upper()
    return node.sql_name().upper()


def non_deterministic_call(tree: exp.Expr) -> str | None:
    """The first non-deterministic function (or TABLESAMPLE) in `tree`, or None."""
    for node in tree.walk():
        if isinstance(node, exp.TableSample):
            return "TABLESAMPLE"
        if isinstance(node, exp.Func):
            name = function_name(node)
            if name in NON_DETERMINISTIC or name.startswith(NON_DETERMINISTIC_PREFIXES):
                return name
    return None


@functools.lru_cache(maxsize=4096)
def sql_facts(sql: str) -> SqlFacts:
    """Facts about `sql`, remembered: front ends send the same few statements again and again."""
    try:
        trees = [tree for tree in sqlglot.parse(sql, read=_DIALECT) if tree is not None]
    except SqlglotError:
        trees = []
    try:
        read_only = classify_statement(sql).read_only
    except SqlPolicyError:
        read_only = False
    if not trees:
        # Unparsed text cannot be proven deterministic: the warehouse decides what it means.
        return SqlFacts(sql, False, False, read_only, "the statement could not be parsed")
    canonical = ";\n".join(tree.sql(dialect=_DIALECT, comments=False) for tree in trees)
    for tree in trees:
        call = non_deterministic_call(tree)
        if call is not None:
            return SqlFacts(canonical, True, False, read_only, f"it calls {call}")
    reason = "" if read_only else "it is not a read"
    return SqlFacts(canonical, True, True, read_only, reason)
