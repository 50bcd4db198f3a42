"""What the local warehouse answers when something goes wrong.

* ApiError        the request is refused: a non-200 answer with the standard error body (§8.1)
* SqlError        the statement ran and failed: 200, state FAILED, `status.error` (§8.3)
* StatementCanceled  the statement was stopped by cancel or `on_wait_timeout=CANCEL`

`sql_error_from_duckdb` turns DuckDB's exceptions into the Databricks error classes users see
for the common cases (syntax, unknown table/column/function, cast, overflow, division by zero).
"""

from __future__ import annotations

import re

import duckdb


class ApiError(Exception):
    """A request the warehouse refuses with an HTTP error and `{error_code, message}`."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def invalid(message: str) -> ApiError:
    """A 400 INVALID_PARAMETER_VALUE, the answer to any malformed request field."""
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def not_found(statement_id: str) -> ApiError:
    """The 404 for a statement id never issued, or already purged (reference §14.4)."""
    return ApiError(404, "NOT_FOUND", f"Statement {statement_id} not found")


class SqlError(Exception):
    """A statement failure, carrying the Databricks error class and SQLSTATE."""

    def __init__(
        self, error_class: str, text: str, sql_state: str, *, error_code: str = "BAD_REQUEST"
    ) -> None:
        super().__init__(text)
        self.error_class = error_class
        self.sql_state = sql_state
        self.error_code = error_code
        self.message = f"[{error_class}] {text} SQLSTATE: {sql_state}"


class StatementCanceled(Exception):
    """The statement was cancelled while it ran."""


def unbound_parameter(name: str) -> SqlError:
    """The failure of a `:name` marker with no supplied value (reference §11)."""
    return SqlError(
        "UNBOUND_SQL_PARAMETER",
        f"Found the unbound parameter: {name}. Please, fix `args` and provide a mapping of the "
        "parameter to either a SQL literal or collection constructor functions such as `map()`, "
        "`array()`, `struct()`.",
        "42P02",
    )


def syntax_error(near: str) -> SqlError:
    """A PARSE_SYNTAX_ERROR pointing at the token where parsing stopped."""
    return SqlError("PARSE_SYNTAX_ERROR", f"Syntax error at or near '{near}'.", "42601")


_NEAR = re.compile(r'at or near "(?P<near>[^"]*)"')
_TABLE = re.compile(r'Table with name "?(?P<name>[^"!\s]+)"? does not exist')
_SCHEMA = re.compile(r'schema "?(?P<name>[^"!\s]+)"? does not exist', re.IGNORECASE)
_FUNCTION = re.compile(r"Function with name (?P<name>\S+) does not exist")
_COLUMN = re.compile(r'Referenced column "(?P<name>[^"]+)" not found')
_TABLE_FUNCTION = re.compile(r'Table Function with name "?(?P<name>[^"!\s]+)"? (?:does not|is not)')
_UNBOUND = re.compile(r"Values were not provided for the following \w* ?parameters: (?P<name>\S+)")
_CAST = re.compile(r"Could not convert string '(?P<value>.*)' to (?P<target>\w+)")
_CAST_OVERFLOW = re.compile(
    r"(?:Type (?P<source>\S+) with value|(?P<big>BIGNUM) value) (?P<value>\S+) (?:can't be cast "
    r"because the value is|is) out of range for (?:the destination type|type) (?P<target>\S+)"
)
# DuckDB's type names (logical and physical) as Databricks spells them, so that no message
# shows the engine underneath; longest names first.
_DUCKDB_TYPES = {
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    "INTEGER_LITERAL": "INT",
    "STRING_LITERAL": "STRING",
    "INT128": "DECIMAL(38,0)",
    "HUGEINT": "DECIMAL(38,0)",
    "UHUGEINT": "DECIMAL(38,0)",
    "UINT128": "DECIMAL(38,0)",
    "BIGNUM": "DECIMAL",
    "VARINT": "DECIMAL",
    "UBIGINT": "DECIMAL(20,0)",
    "UINTEGER": "BIGINT",
    "USMALLINT": "INT",
    "UTINYINT": "SMALLINT",
    "UINT64": "DECIMAL(20,0)",
    "UINT32": "BIGINT",
    "UINT16": "INT",
    "UINT8": "SMALLINT",
    "INT64": "BIGINT",
    "INT32": "INT",
    "INT16": "SMALLINT",
    "INT8": "TINYINT",
    "INTEGER": "INT",
    "VARCHAR": "STRING",
    "BLOB": "BINARY",
    "TIMESTAMP_NS": "TIMESTAMP_NTZ",
    "TIMESTAMP_MS": "TIMESTAMP_NTZ",
    "TIMESTAMP_S": "TIMESTAMP_NTZ",
}
# A name, and DuckDB's list suffix: `INTEGER[]` is Databricks' ARRAY<INT>.
_TYPE_NAMES = re.compile(r"\b(" + "|".join(map(re.escape, _DUCKDB_TYPES)) + r")\b(\[\])?")
_SANDBOX = (
    "The local warehouse does not read or write files, attach databases, load extensions, "
    "reach the network or change its configuration; only its own tables can be queried."
)


def sql_error_from_duckdb(exc: duckdb.Error) -> SqlError:
    """The Databricks error class, message and SQLSTATE closest to a DuckDB error."""
    text = str(exc).split("\n", 1)[0]
    detail = _databricks_type_names(text.split(": ", 1)[-1])
    if isinstance(exc, duckdb.PermissionException | duckdb.IOException | duckdb.HTTPException):
        # Fixed text: DuckDB's names the path or URL it refused.
        return SqlError("INSUFFICIENT_PERMISSIONS", _SANDBOX, "42501")
    if "the configuration has been locked" in text:
        return SqlError("CONFIG_NOT_AVAILABLE", "This configuration is not available.", "42K0I")
    if isinstance(exc, duckdb.ParserException):
        near = _NEAR.search(text)
        return syntax_error(near["near"] if near else "end of input")
    if "Division by zero" in text:
        return SqlError(
            "DIVIDE_BY_ZERO",
            "Division by zero. Use `try_divide` to tolerate divisor being 0 and return NULL "
            'instead. If necessary set "spark.sql.ansi.enabled" to "false" to bypass this error.',
            "22012",
        )
    if isinstance(exc, duckdb.CatalogException):
        return _catalog_error(text, detail)
    if isinstance(exc, duckdb.BinderException) and (match := _COLUMN.search(text)):
        return SqlError(
            "UNRESOLVED_COLUMN.WITH_SUGGESTION",
            f"A column, variable, or function parameter with name `{match['name']}` cannot be "
            "resolved.",
            "42703",
        )
    if isinstance(exc, duckdb.ConversionException):
        if match := _CAST.search(text):
            target = _databricks_type_names(match["target"])
            return SqlError(
                "CAST_INVALID_INPUT",
                f"The value '{match['value']}' of the type \"STRING\" cannot be cast to "
                f'"{target}" because it is malformed. Correct the value as per the syntax, or '
                "change its target type. Use `try_cast` to tolerate malformed input and return "
                "NULL instead.",
                "22018",
            )
        if match := _CAST_OVERFLOW.search(text):
            source = _databricks_type_names(match["source"] or match["big"])
            return SqlError(
                "CAST_OVERFLOW",
                f'The value {match["value"]} of the type "{source}" cannot be cast to '
                f'"{_databricks_type_names(match["target"])}" due to an overflow. Use `try_cast` '
                "to tolerate overflow and return NULL instead.",
                "22003",
            )
        return SqlError("CAST_INVALID_INPUT", detail, "22018")
    if isinstance(exc, duckdb.OutOfRangeException):
        return SqlError(
            "ARITHMETIC_OVERFLOW",
            f"{detail.removesuffix('!')}. Use 'try_add', 'try_multiply' or a wider type to "
            "tolerate overflow and return NULL instead.",
            "22003",
        )
    if isinstance(exc, duckdb.BinderException):
        # DuckDB lists candidate signatures after the first sentence: engine detail, dropped.
        return SqlError("DATATYPE_MISMATCH", detail.split(". ", 1)[0] + ".", "42K09")
    if isinstance(exc, duckdb.InvalidInputException) and (match := _UNBOUND.search(text)):
        # A positional marker ($1, ?) the translation left alone: Databricks binds none of them.
        return unbound_parameter(match["name"])
    if isinstance(exc, duckdb.InvalidInputException) and text.startswith("Invalid Input Error:"):
        # DuckDB's error() is what Databricks' raise_error() translates to.
        return SqlError("USER_RAISED_EXCEPTION", detail, "P0001")
    if isinstance(exc, duckdb.ProgrammingError | duckdb.DataError):
        return SqlError("INVALID_SQL_SYNTAX", detail, "42000")
    return SqlError("INTERNAL_ERROR", detail, "XX000", error_code="INTERNAL_ERROR")


def _databricks_type_names(text: str) -> str:
    def rename(match: re.Match[str]) -> str:
        name = _DUCKDB_TYPES[match[1]]
        return f"ARRAY<{name}>" if match[2] else name

    return _TYPE_NAMES.sub(rename, text)


def _catalog_error(text: str, detail: str) -> SqlError:
    # Databricks names a read of `c.s.t` whose catalog or schema is missing a missing table
    # (TABLE_OR_VIEW_NOT_FOUND, 42P01), not a missing schema; SCHEMA_NOT_FOUND is for USE.
    if match := _TABLE.search(text):
        return SqlError(
            "TABLE_OR_VIEW_NOT_FOUND",
            f"The table or view {_backquoted(match['name'])} cannot be found. Verify the "
            "spelling and correctness of the schema and catalog.",
            "42P01",
        )
    if match := _TABLE_FUNCTION.search(text):
        return SqlError(
            "UNRESOLVED_ROUTINE",
            f"Cannot resolve routine `{match['name']}` on search path.",
            "42883",
        )
    if match := _FUNCTION.search(text):
        return SqlError(
            "UNRESOLVED_ROUTINE",
            f"Cannot resolve routine `{match['name']}` on search path.",
            "42883",
        )
    if match := _SCHEMA.search(text):
        return SqlError(
            "SCHEMA_NOT_FOUND", f"The schema `{match['name']}` cannot be found.", "42704"
        )
    return SqlError("TABLE_OR_VIEW_NOT_FOUND", detail.split("!", 1)[0] + ".", "42P01")


def _backquoted(dotted: str) -> str:
    return ".".join(f"`{part}`" for part in dotted.split("."))
