"""Named queries: vetted, parameterized SQL files that callers run by name.

Each `<name>.sql` file in the queries directory is one statement. Its parameters are declared
in the comment lines at the top of the file, before the first line of SQL:

    -- name: trips_by_zip                      (optional; the file stem otherwise)
    -- description: Trips picked up in one zip code
    -- param: zip INT required -- pickup zip code
    -- param: since DATE default 2016-01-01
    -- param: until TIMESTAMP default '2016-02-01 00:00:00'
    -- param: vendor STRING optional -- NULL when not given
    -- param: limit INT default 100
    -- cache: ttl=300 stale=60                 (optional; or `off`; else CACHE_TTL_S/STALE_S)
    SELECT ... WHERE pickup_zip = :zip AND ... LIMIT :limit

A `param` line is `<name> <TYPE> required|optional|default <value> [-- <description>]`; a
default holding spaces is single-quoted (`''` for a quote). Types are the scalar types named
parameters accept: STRING, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p,s),
BOOLEAN, DATE, TIMESTAMP, TIMESTAMP_NTZ. Other header comments are free text, but a comment
that looks like `-- <word>: ...` must use one of the four keys, so a misspelt key is an error
rather than silently ignored. Every `:marker` in the SQL must be declared and every declared
parameter used. Values are bound as Statement Execution parameters, never spliced into SQL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sqlglot import Token, TokenError, TokenType
from sqlglot.dialects.dialect import Dialect

_Fail = Callable[[int, str], "QueryFileError"]
_Bad = Callable[[str], "ParamError"]

IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_KEY_RE = re.compile(r"^--\s*([A-Za-z_]+)\s*:\s*(.*)$")
_DECIMAL_TYPE_RE = re.compile(r"^DECIMAL\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$", re.IGNORECASE)
_INTEGER_TEXT_RE = re.compile(r"^[+-]?\d+$")
_DECIMAL_TEXT_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_DATE_TEXT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP_TEXT_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?"
    r"(?P<offset>Z|[+-]\d{2}:\d{2})?$"
)

INTEGER_RANGES: Mapping[str, tuple[int, int]] = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INT": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
}
SCALAR_TYPES = frozenset(
    {*INTEGER_RANGES, "STRING", "FLOAT", "DOUBLE", "BOOLEAN", "DATE", "TIMESTAMP", "TIMESTAMP_NTZ"}
)
_FLOAT_MAX = 3.4028234663852886e38
_SPECIAL_FLOATS = {"nan": "NaN", "infinity": "Infinity", "-infinity": "-Infinity"}
# Tokens after which `:word` reads as a path into a semi-structured value (`raw:owner`), not a
# parameter marker: Databricks only parses a marker where an expression may start.
_VALUE_END_TOKENS = frozenset(
    {
        TokenType.VAR,
        TokenType.IDENTIFIER,
        TokenType.STRING,
        TokenType.NUMBER,
        TokenType.R_PAREN,
        TokenType.R_BRACKET,
        TokenType.R_BRACE,
    }
)


class QueryFileError(Exception):
    """A query file cannot be used; the message names the file, the line and the problem."""


class ParamError(Exception):
    """A caller's parameter value does not fit its declaration; `.param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class QueryParam:
    """One declared parameter: its SQL type, and whether it must be given or has a default."""

    name: str
    type: str
    required: bool
    default: str | None
    description: str | None


@dataclass(frozen=True, slots=True)
class QueryCache:
    """A named query's own cache policy (`-- cache: ttl=300 stale=60`; `off` is a TTL of 0)."""

    ttl_s: float
    stale_s: float = 0.0


@dataclass(frozen=True, slots=True)
class NamedQuery:
    """One vetted statement and the parameters it accepts."""

    name: str
    description: str | None
    sql: str
    params: tuple[QueryParam, ...]
    cache: QueryCache | None = None  # None: the service's CACHE_TTL_S and CACHE_STALE_S


_CACHE_SETTING_RE = re.compile(r"^(ttl|stale)=(\d+)$")


def parse_cache(value: str) -> QueryCache:
    """`off`, or `ttl=N` with an optional `stale=N` (seconds); ValueError naming the problem."""
    words = value.split()
    if [w.lower() for w in words] == ["off"]:
        return QueryCache(0.0)
    found: dict[str, float] = {}
    for word in words:
        match = _CACHE_SETTING_RE.match(word.lower())
        if match is None:
            raise ValueError(
                f"cache: {word!r} is not understood (write 'off', or 'ttl=N stale=N' in seconds)"
            )
        if match[1] in found:
            raise ValueError(f"cache: {match[1]} is given twice")
        found[match[1]] = float(match[2])
    if "ttl" not in found:
        raise ValueError("cache: give ttl=N (seconds), or 'off'")
    return QueryCache(found["ttl"], found.get("stale", 0.0))


def load_queries(directory: Path) -> dict[str, NamedQuery]:
    """Load and check every `*.sql` file in `directory`, so a broken file stops start-up."""
    if not directory.is_dir():
        raise QueryFileError(f"queries directory {directory.name!r} does not exist")
    queries: dict[str, NamedQuery] = {}
    files: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise QueryFileError(f"{path.name}: not UTF-8 text") from None
        query = parse_query(text, filename=path.name, default_name=path.stem)
        if query.name in queries:
            raise QueryFileError(
                f"{path.name}: query name {query.name!r} is already used by {files[query.name]}"
            )
        queries[query.name] = query
        files[query.name] = path.name
    return queries


def parse_query(text: str, *, filename: str, default_name: str) -> NamedQuery:
    """Parse one query file's text; errors name `filename` and the line."""

    def fail(line: int, problem: str) -> QueryFileError:
        return QueryFileError(f"{filename}, line {line}: {problem}")

    lines = text.splitlines()
    name: str | None = None
    description: str | None = None
    params: dict[str, QueryParam] = {}
    cache: QueryCache | None = None
    body_start = len(lines)
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            body_start = number - 1
            break
        match = _HEADER_KEY_RE.match(line)
        if match is None:
            continue
        key, value = match[1].lower(), match[2].strip()
        if key == "name":
            if name is not None:
                raise fail(number, "a second 'name' line")
            if not IDENTIFIER_RE.match(value):
                raise fail(number, f"query name {value!r} is not an identifier")
            name = value
        elif key == "description":
            if description is not None:
                raise fail(number, "a second 'description' line")
            description = value or None
        elif key == "cache":
            if cache is not None:
                raise fail(number, "a second 'cache' line")
            try:
                cache = parse_cache(value)
            except ValueError as exc:
                raise fail(number, str(exc)) from None
        elif key == "param":
            try:
                param = _parse_param(value)
            except ValueError as exc:
                raise fail(number, str(exc)) from None
            if param.name in params:
                raise fail(number, f"parameter {param.name!r} is declared twice")
            params[param.name] = param
        else:
            raise fail(
                number, f"unknown header key {key!r} (expected name, description, param, cache)"
            )
    if name is None:
        if not IDENTIFIER_RE.match(default_name):
            raise fail(1, f"file name {default_name!r} is not an identifier; add a 'name' line")
        name = default_name

    sql = "\n".join(lines[body_start:]).strip().removesuffix(";").rstrip()
    if not sql:
        raise fail(len(lines) or 1, "no SQL after the header")
    used: dict[str, int] = {}
    for marker, marker_line in _markers(text, fail):
        if marker not in params:
            raise fail(marker_line, f"parameter :{marker} is not declared in the header")
        used.setdefault(marker, marker_line)
    for param in params.values():
        if param.name not in used:
            raise fail(_declared_line(lines, param.name), f"parameter {param.name!r} is never used")
    return NamedQuery(name, description, sql, tuple(params.values()), cache)


def _declared_line(lines: list[str], param: str) -> int:
    pattern = re.compile(rf"^\s*--\s*param\s*:\s*{re.escape(param)}\b", re.IGNORECASE)
    return next((n for n, line in enumerate(lines, start=1) if pattern.match(line)), 1)


def _markers(text: str, fail: _Fail) -> list[tuple[str, int]]:
    """Every `:name` parameter marker with its line, ignoring strings, comments and `::` casts."""
    tokenizer = Dialect.get_or_raise("databricks").tokenizer()
    try:
        tokens = tokenizer.tokenize(text)
    except TokenError:
        # The tokenizer keeps what it read; the trouble starts after the last good token.
        read = tokenizer.tokens
        position = read[-1].end + 1 if read else 0
        position += len(text[position:]) - len(text[position:].lstrip())
        line = text.count("\n", 0, position) + 1
        raise fail(line, "the SQL cannot be read (an unclosed quote or comment?)") from None
    markers = []
    for index, token in enumerate(tokens):
        if token.token_type == TokenType.PLACEHOLDER:
            raise fail(token.line, "positional '?' markers are not supported; use :name")
        if token.token_type != TokenType.COLON or index + 1 >= len(tokens):
            continue
        following = tokens[index + 1]
        if following.start != token.end + 1 or not IDENTIFIER_RE.match(following.text):
            continue
        if index > 0 and _ends_value(tokens[index - 1]):
            continue
        markers.append((following.text, token.line))
    return markers


def _ends_value(token: Token) -> bool:
    return token.token_type in _VALUE_END_TOKENS


def _parse_param(spec: str) -> QueryParam:
    """`<name> <TYPE> required|optional|default <value> [-- <description>]`."""
    name, rest = _split_word(spec)
    if not IDENTIFIER_RE.match(name):
        raise ValueError(f"parameter name {name!r} is not an identifier")
    rest = rest.strip()
    type_match = re.match(r"^(DECIMAL\s*\([^)]*\)|\S+)\s*", rest, re.IGNORECASE)
    if type_match is None or not type_match[1]:
        raise ValueError(f"parameter {name!r} has no type")
    sql_type = normalize_type(type_match[1])
    if sql_type is None:
        raise ValueError(
            f"parameter {name!r} has unknown type {type_match[1]!r} (expected one of "
            f"{', '.join(sorted(SCALAR_TYPES))}, DECIMAL(p,s))"
        )
    rest = rest[type_match.end() :]
    mode, rest = _split_word(rest)
    mode = mode.lower()
    default: str | None = None
    if mode == "default":
        default, rest = _take_value(name, rest.strip())
        try:
            default = _to_param_value(QueryParam(name, sql_type, True, None, None), default)
        except ParamError as exc:
            raise ValueError(f"default of {exc}") from None
    elif mode not in ("required", "optional"):
        raise ValueError(
            f"parameter {name!r} needs 'required', 'optional' or 'default <value>' after its type"
        )
    rest = rest.strip()
    description: str | None = None
    if rest.startswith("--"):
        description = rest[2:].strip() or None
    elif rest:
        raise ValueError(f"parameter {name!r}: unexpected {rest!r} (a description starts with --)")
    return QueryParam(name, sql_type, mode == "required", default, description)


def _split_word(text: str) -> tuple[str, str]:
    parts = text.strip().split(maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else (text.strip(), "")


def _take_value(name: str, text: str) -> tuple[str, str]:
    if not text:
        raise ValueError(f"parameter {name!r}: 'default' needs a value")
    if not text.startswith("'"):
        return _split_word(text)
    index = 1
    chars = []
    while index < len(text):
        if text[index] == "'":
            if text[index + 1 : index + 2] == "'":
                chars.append("'")
                index += 2
                continue
            return "".join(chars), text[index + 1 :]
        chars.append(text[index])
        index += 1
    raise ValueError(f"parameter {name!r}: the quoted default is not closed")


def normalize_type(text: str) -> str | None:
    """The canonical spelling of a parameter type, or None when parameters cannot have it."""
    compact = text.strip()
    decimal = _DECIMAL_TYPE_RE.match(compact)
    if decimal is not None:
        # Spark's DECIMAL defaults to DECIMAL(10,0); precision is at most 38.
        precision = int(decimal[1]) if decimal[1] else 10
        scale = int(decimal[2]) if decimal[2] else 0
        if not 1 <= precision <= 38 or scale > precision:
            return None
        return f"DECIMAL({precision},{scale})"
    upper = compact.upper()
    return upper if upper in SCALAR_TYPES else None


def bind_params(query: NamedQuery, given: Mapping[str, object]) -> dict[str, dict[str, str | None]]:
    """Check `given` JSON values against the declaration and apply defaults.

    Returns `{name: {"value": text or None, "type": declared type}}`, ready to become
    Statement Execution parameters; raises ParamError naming the first bad parameter.
    """
    declared = {param.name: param for param in query.params}
    for name in given:
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise ParamError(name, f"unknown parameter {name!r} (this query takes: {known})")
    bound: dict[str, dict[str, str | None]] = {}
    for param in query.params:
        if param.name in given:
            value = given[param.name]
            if value is None and param.required:
                raise ParamError(param.name, f"parameter {param.name!r} is required, not null")
            text = None if value is None else _to_param_value(param, value)
        elif param.required:
            raise ParamError(param.name, f"parameter {param.name!r} is required")
        else:
            text = param.default
        bound[param.name] = {"value": text, "type": param.type}
    return bound


def _to_param_value(param: QueryParam, value: object) -> str:
    """The parameter's text form (what `cast(<text> AS <type>)` reads), or ParamError."""
    kind = param.type

    def bad(why: str) -> ParamError:
        return ParamError(param.name, f"parameter {param.name!r} ({kind}): {why}")

    if isinstance(value, list | dict | tuple | set):
        raise bad("expected a single value, not a list or object")
    if kind == "STRING":
        if not isinstance(value, str):
            raise bad("expected a string")
        return value
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower()
        raise bad("expected true or false")
    if kind in INTEGER_RANGES:
        return _integer_text(value, INTEGER_RANGES[kind], bad)
    if kind in ("FLOAT", "DOUBLE"):
        return _float_text(value, kind, bad)
    if kind.startswith("DECIMAL("):
        return _decimal_text(value, kind, bad)
    if not isinstance(value, str):
        raise bad("expected a string")
    if kind == "DATE":
        return _checked_date(value, bad)
    return _checked_timestamp(value, kind, bad)


def _integer_text(value: object, bounds: tuple[int, int], bad: _Bad) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise bad("expected an integer")
    if isinstance(value, str):
        if not _INTEGER_TEXT_RE.match(value.strip()):
            raise bad("expected an integer")
        value = int(value.strip())
    low, high = bounds
    if not low <= value <= high:
        raise bad(f"{value} is out of range ({low} to {high})")
    return str(value)


def _float_text(value: object, kind: str, bad: _Bad) -> str:
    if isinstance(value, bool):
        raise bad("expected a number")
    if isinstance(value, str):
        special = _SPECIAL_FLOATS.get(value.strip().lower())
        if special is not None:
            return special
        try:
            number = float(value)
        except ValueError:
            raise bad("expected a number") from None
        if not math.isfinite(number):
            raise bad("expected a number")
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise bad("expected a number")
    if kind == "FLOAT" and abs(number) > _FLOAT_MAX:
        raise bad("out of range for FLOAT")
    return str(value).strip() if isinstance(value, str | int) else repr(number)


def _decimal_text(value: object, kind: str, bad: _Bad) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise bad("expected a decimal number, preferably as a string")
    text = value.strip() if isinstance(value, str) else repr(value)
    if isinstance(value, str) and not _DECIMAL_TEXT_RE.match(text):
        raise bad("expected a decimal number such as '12.50'")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise bad("expected a decimal number such as '12.50'") from None
    if not number.is_finite():
        raise bad("expected a finite decimal number")
    precision, scale = (int(part) for part in kind[len("DECIMAL(") : -1].split(","))
    exponent = number.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if places > scale:
        raise bad(f"more than {scale} digits after the decimal point")
    if abs(number) >= Decimal(10) ** (precision - scale):
        raise bad(f"too large (at most {precision - scale} digits before the decimal point)")
    return text


def _checked_date(value: str, bad: _Bad) -> str:
    if not _DATE_TEXT_RE.match(value):
        raise bad("expected a date as YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise bad("not a real date") from None
    return value


def _checked_timestamp(value: str, kind: str, bad: _Bad) -> str:
    match = _TIMESTAMP_TEXT_RE.match(value)
    if match is None:
        raise bad("expected an ISO 8601 timestamp such as 2016-01-01T08:30:00")
    if kind == "TIMESTAMP_NTZ" and match["offset"]:
        raise bad("a TIMESTAMP_NTZ has no time zone offset")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad("not a real date and time") from None
    return value
