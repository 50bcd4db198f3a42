"""Read-only SQL policy: decide from a real parse whether one statement only reads.

The service runs SQL with its own Databricks identity, so in read-only mode it refuses anything
that is not a single read before the warehouse sees it. The decision fails closed: what the
parser (sqlglot, Databricks dialect) does not model as a read is refused. The warehouse-side
permissions of the service's identity remain the real guard; this is the first line.

    SqlPolicyError          message safe to show to the caller
     +-- StatementNotAllowed    parsed, but not a single read statement (.kind)
     +-- UnparsableSql          the parser stopped (.line, .column, 1-based)
          +-- EmptySql              nothing but whitespace, comments or ';'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlglot import Dialect, ParseError, Token, TokenError, TokenType, exp
from sqlglot.errors import SqlglotError
from sqlglot.parsers.databricks import DatabricksParser

__all__ = [
    "EmptySql",
    "SqlPolicyError",
    "StatementKind",
    "StatementNotAllowed",
    "UnparsableSql",
    "check_read_only",
    "classify_statement",
]


@dataclass(frozen=True, slots=True)
class StatementKind:
    """What a statement is, as a short human label, and whether it only reads."""

    name: str
    read_only: bool


class SqlPolicyError(Exception):
    """The SQL was refused by the policy; the message is safe to show to the caller."""


class StatementNotAllowed(SqlPolicyError):
    """The SQL parsed, but it is not a single read statement."""

    def __init__(self, kind: StatementKind) -> None:
        if kind.name == _MULTIPLE:
            message = "MULTIPLE STATEMENTS are not allowed: send one read-only statement"
        else:
            message = f"{kind.name} statements are not allowed: this service is read-only"
        super().__init__(message)
        self.kind = kind


class UnparsableSql(SqlPolicyError):
    """The parser could not read the SQL; line and column (1-based) say where it stopped."""

    def __init__(self, reason: str, *, line: int, column: int) -> None:
        super().__init__(f"could not parse the SQL near line {line}, column {column}: {reason}")
        self.line = line
        self.column = column


class EmptySql(UnparsableSql):
    """The SQL holds no statement: only whitespace, comments or semicolons."""

    def __init__(self) -> None:
        super().__init__("the SQL contains no statement", line=1, column=1)


_MULTIPLE = "MULTIPLE STATEMENTS"
_FRAGMENT_CHARS = 20
_DIALECT = Dialect.get_or_raise("databricks")

# Statement roots that only read; anything else at the root is refused.
_READ_ROOTS: dict[type[exp.Expr], str] = {
    exp.Select: "SELECT",
    exp.Subquery: "SELECT",
    exp.Union: "UNION",
    exp.Intersect: "INTERSECT",
    exp.Except: "EXCEPT",
    exp.Values: "VALUES",
    exp.Describe: "DESCRIBE",
    exp.Show: "SHOW",
}

# Nodes that write or change session state; one anywhere inside a read refuses it
# (e.g. `WITH d AS (DELETE FROM t) SELECT 1`, `SELECT 1 UNION (SELECT 2 INTO x)`).
_WRITE_NODES: tuple[type[exp.Expr], ...] = (
    exp.DML,
    exp.DDL,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Grant,
    exp.Revoke,
    exp.Use,
    exp.Set,
    exp.Command,
    exp.Cache,
    exp.Uncache,
    exp.Refresh,
    exp.Analyze,
    exp.LoadData,
    exp.Declare,
    exp.Comment,
    exp.Into,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Pragma,
    exp.Execute,
    exp.Kill,
)

# Labels for Databricks statements, by first keyword: used where sqlglot keeps a statement as
# an opaque Command, cannot parse it at all (RESTORE, UNDROP, ...), or misreads it as a bare
# expression (RESET, LIST, CLEAR CACHE, TABLE t). All of these are refused.
_KEYWORD_LABELS: dict[str, str] = {
    "ADD": "ADD",
    "ALTER": "ALTER",
    "ANALYZE": "ANALYZE TABLE",
    "APPLY": "APPLY CHANGES",
    "BEGIN": "BEGIN",
    "CACHE": "CACHE TABLE",
    "CALL": "CALL",
    "CLEAR": "CLEAR CACHE",
    "COMMENT": "COMMENT ON",
    "COMMIT": "COMMIT",
    "CONVERT": "CONVERT TO DELTA",
    "COPY": "COPY INTO",
    "CREATE": "CREATE",
    "DECLARE": "DECLARE",
    "DELETE": "DELETE",
    "DENY": "DENY",
    "DROP": "DROP",
    "EXECUTE": "EXECUTE IMMEDIATE",
    "FSCK": "FSCK REPAIR TABLE",
    "GENERATE": "GENERATE",
    "GRANT": "GRANT",
    "INSERT": "INSERT",
    "LIST": "LIST",
    "LOAD": "LOAD DATA",
    "MERGE": "MERGE",
    "MSCK": "MSCK REPAIR TABLE",
    "OPTIMIZE": "OPTIMIZE",
    "REFRESH": "REFRESH",
    "REORG": "REORG TABLE",
    "REPAIR": "REPAIR TABLE",
    "REPLACE": "REPLACE",
    "RESET": "RESET",
    "RESTORE": "RESTORE",
    "REVOKE": "REVOKE",
    "ROLLBACK": "ROLLBACK",
    "SET": "SET",
    "SYNC": "SYNC",
    "TABLE": "TABLE",
    "TRUNCATE": "TRUNCATE TABLE",
    "UNCACHE": "UNCACHE TABLE",
    "UNDROP": "UNDROP",
    "UNSET": "UNSET",
    "UPDATE": "UPDATE",
    "USE": "USE",
    "VACUUM": "VACUUM",
}

# Databricks `EXPLAIN [EXTENDED | CODEGEN | COST | FORMATTED] statement`; sqlglot keeps EXPLAIN
# opaque, so the explained statement is classified on its own tokens.
_EXPLAIN_MODES = frozenset({"EXTENDED", "CODEGEN", "COST", "FORMATTED"})
# DESCRIBE forms sqlglot does not parse; every DESCRIBE only reads metadata.
_DESCRIBE_OBJECTS = frozenset(
    {
        "CATALOG",
        "CONNECTION",
        "CREDENTIAL",
        "DETAIL",
        "EXTERNAL",
        "PROCEDURE",
        "PROVIDER",
        "RECIPIENT",
        "SHARE",
        "VOLUME",
    }
)


class _QuietParser(DatabricksParser):
    """The Databricks parser without its log warning, which would quote the caller's SQL."""

    def _warn_unsupported(self) -> None:
        return


def classify_statement(sql: str) -> StatementKind:
    """Say what kind of statement `sql` is and whether it only reads; raise UnparsableSql."""
    statements = _split_statements(_tokenize(sql))
    if not statements:
        raise EmptySql
    if len(statements) > 1:
        return StatementKind(_MULTIPLE, read_only=False)
    return _classify_tokens(statements[0], sql)


def check_read_only(sql: str) -> StatementKind:
    """Return the kind of `sql` if it is one read statement; raise a SqlPolicyError if not."""
    kind = classify_statement(sql)
    if not kind.read_only:
        raise StatementNotAllowed(kind)
    return kind


def _tokenize(sql: str) -> list[Token]:
    tokenizer = _DIALECT.tokenizer()
    try:
        return tokenizer.tokenize(sql)
    except TokenError:
        # The tokenizer stops on an unterminated quote or comment; it begins after the last
        # token it completed.
        done = tokenizer.tokens
        offset = done[-1].end + 1 if done else 0
        while offset < len(sql) and sql[offset].isspace():
            offset += 1
        line, column = _position(sql, offset)
        raise UnparsableSql(
            "unterminated string, quoted identifier or comment", line=line, column=column
        ) from None


def _split_statements(tokens: list[Token]) -> list[list[Token]]:
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


def _classify_tokens(tokens: Sequence[Token], sql: str) -> StatementKind:
    first = tokens[0].text.split()[0].upper()
    second = tokens[1].text.upper() if len(tokens) > 1 else ""
    if first == "EXPLAIN":
        return _classify_explain(tokens, sql)
    if first in {"DESCRIBE", "DESC"} and second == "QUERY":
        return _classify_wrapped("DESCRIBE", tokens, 2, sql)
    if first in {"DESCRIBE", "DESC"} and second in _DESCRIBE_OBJECTS and len(tokens) > 2:
        return StatementKind("DESCRIBE", read_only=True)

    try:
        roots = _QuietParser(dialect=_DIALECT).parse(list(tokens), sql)
    except ParseError as error:
        if first in _KEYWORD_LABELS:
            return StatementKind(_KEYWORD_LABELS[first], read_only=False)
        raise _unparsable(error, tokens, sql) from None
    except RecursionError:
        # sqlglot recurses about 20 frames per nesting level: at Python's default recursion
        # limit, some 45 nested parentheses are the most it can read.
        line, column = _position(sql, tokens[0].start)
        raise UnparsableSql(
            "the statement is nested too deeply to check", line=line, column=column
        ) from None
    except SqlglotError:
        line, column = _position(sql, tokens[0].start)
        raise UnparsableSql(
            "the statement could not be checked", line=line, column=column
        ) from None

    nodes = [root for root in roots if root is not None and not isinstance(root, exp.Semicolon)]
    if len(nodes) != 1:
        return StatementKind(_MULTIPLE, read_only=False)
    return _classify_node(nodes[0], first, tokens, sql)


def _classify_explain(tokens: Sequence[Token], sql: str) -> StatementKind:
    """Classify `EXPLAIN [mode] <statement>` by the statement it explains."""
    # The tokenizer keeps everything after EXPLAIN as one opaque string, so the explained
    # statement is tokenized again with the EXPLAIN keyword blanked out (offsets unchanged).
    end = tokens[0].end + 1
    if len(tokens) == 1:
        line, column = _position(sql, end)
        raise UnparsableSql("expected a statement after EXPLAIN", line=line, column=column)
    inner_sql = "".join(c if c == "\n" else " " for c in sql[:end]) + sql[end:]
    statements = _split_statements(_tokenize(inner_sql))
    if len(statements) != 1:
        return StatementKind(_MULTIPLE, read_only=False)
    inner = statements[0]
    start = 1 if inner[0].text.upper() in _EXPLAIN_MODES and len(inner) > 1 else 0
    return _classify_wrapped("EXPLAIN", inner, start, inner_sql)


def _classify_wrapped(prefix: str, tokens: Sequence[Token], start: int, sql: str) -> StatementKind:
    """Classify `DESCRIBE QUERY <statement>` and the like by the statement they wrap."""
    if start >= len(tokens):
        last = tokens[-1]
        line, column = _position(sql, last.end + 1)
        raise UnparsableSql(
            f"expected a statement after {last.text.upper()}", line=line, column=column
        )
    inner = _classify_tokens(tokens[start:], sql)
    if inner.read_only:
        return StatementKind(prefix, read_only=True)
    return StatementKind(f"{prefix} {inner.name}", read_only=False)


def _classify_node(root: exp.Expr, first: str, tokens: Sequence[Token], sql: str) -> StatementKind:
    read_name = _READ_ROOTS.get(type(root))
    if read_name is not None:
        for node in root.walk():
            if isinstance(node, _WRITE_NODES):
                return StatementKind(_label(node, first), read_only=False)
        return StatementKind(read_name, read_only=True)
    if isinstance(root, exp.Command) and first == "SHOW":
        # Every Databricks SHOW statement only reads metadata; sqlglot keeps them opaque.
        if len(tokens) == 1:
            line, column = _position(sql, tokens[0].end + 1)
            raise UnparsableSql("expected what to SHOW", line=line, column=column)
        return StatementKind("SHOW", read_only=True)
    if isinstance(root, _WRITE_NODES):
        return StatementKind(_label(root, first), read_only=False)
    if first in _KEYWORD_LABELS:
        return StatementKind(_KEYWORD_LABELS[first], read_only=False)
    # A bare expression such as `foo bar`: Databricks would reject it as a syntax error.
    line, column = _position(sql, tokens[0].start)
    raise UnparsableSql(
        f"expected a statement, found {_fragment(tokens[0].text)!r}", line=line, column=column
    )


def _label(node: exp.Expr, first: str) -> str:
    """A short label for a statement node, such as "INSERT OVERWRITE" or "CREATE VIEW"."""
    kind = node.args.get("kind")
    kind_text = kind.name if isinstance(kind, exp.Expr) else str(kind or "")
    match node:
        case exp.Insert():
            return "INSERT OVERWRITE" if node.args.get("overwrite") else "INSERT"
        case exp.Create() | exp.Drop() | exp.Alter():
            verb = type(node).__name__.upper()
            return f"{verb} {kind_text.upper()}".strip()
        case exp.Use():
            return f"USE {kind_text.upper()}".strip()
        case exp.Into():
            return "SELECT INTO"
        case exp.Command():
            keyword = node.name.split()[0].upper() if node.name else first
            return _KEYWORD_LABELS.get(keyword, keyword)
    labels: dict[type[exp.Expr], str] = {
        exp.Update: "UPDATE",
        exp.Delete: "DELETE",
        exp.Merge: "MERGE",
        exp.Copy: "COPY INTO",
        exp.TruncateTable: "TRUNCATE TABLE",
        exp.Grant: "GRANT",
        exp.Revoke: "REVOKE",
        exp.Set: "SET",
        exp.Cache: "CACHE TABLE",
        exp.Uncache: "UNCACHE TABLE",
        exp.Refresh: "REFRESH",
        exp.Analyze: "ANALYZE TABLE",
        exp.LoadData: "LOAD DATA",
        exp.Declare: "DECLARE",
        exp.Comment: "COMMENT ON",
    }
    return labels.get(type(node)) or _KEYWORD_LABELS.get(first) or type(node).__name__.upper()


def _unparsable(error: ParseError, tokens: Sequence[Token], sql: str) -> UnparsableSql:
    """Point at where the parser stopped, quoting at most a short fragment of the SQL."""
    detail = error.errors[0] if error.errors else {}
    description = str(detail.get("description") or "")
    highlight = str(detail.get("highlight") or "")
    at = _token_at(tokens, detail.get("line"), detail.get("col")) or tokens[-1]
    if "SENTINEL" in description:
        line, column = _position(sql, at.end + 1)
        expected = description.split(" but got", 1)[0].lower()
        reason = "unexpected end of the SQL"
        return UnparsableSql(
            f"{reason}, {expected}" if expected.startswith("expected") else reason,
            line=line,
            column=column,
        )
    line, column = _position(sql, at.start)
    if description.startswith("Expecting "):
        reason = f"{description.lower()} after {_fragment(highlight)!r}"
    elif description.startswith("Required keyword"):
        reason = f"incomplete expression at {_fragment(highlight)!r}"
    else:
        reason = f"unexpected {_fragment(highlight)!r}"
    return UnparsableSql(reason, line=line, column=column)


def _token_at(tokens: Sequence[Token], line: object, col: object) -> Token | None:
    # sqlglot reports the line and the 1-based column where the offending token ends.
    for token in tokens:
        if token.line == line and token.col == col:
            return token
    return None


def _position(sql: str, offset: int) -> tuple[int, int]:
    offset = max(0, min(offset, len(sql)))
    line = sql.count("\n", 0, offset) + 1
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _fragment(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _FRAGMENT_CHARS else flat[: _FRAGMENT_CHARS - 3] + "..."
