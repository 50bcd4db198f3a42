"""The execute request, validated field by field as the real service does (reference §3.1).

Every malformed field is refused with 400 INVALID_PARAMETER_VALUE naming it. Unknown fields
are ignored: clients such as the SQL connector's SEA backend send undocumented ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dbx_backend.localwarehouse.errors import ApiError, invalid

MAX_STATEMENT_BYTES = 16 * 1024 * 1024
MAX_QUERY_TAGS = 20
INT64_MAX = 2**63 - 1  # row_limit and byte_limit are int64 fields
DISPOSITIONS = frozenset({"INLINE", "EXTERNAL_LINKS"})
FORMATS = frozenset({"JSON_ARRAY", "ARROW_STREAM", "CSV"})
ON_WAIT_TIMEOUT = frozenset({"CONTINUE", "CANCEL"})

_WAIT_TIMEOUT = re.compile(r"^(\d+(?:\.\d+)?)s$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A scalar SQL type as `cast` accepts it: a name, optional (p[,s]), or an INTERVAL qualifier.
_PARAM_TYPE = re.compile(
    r"^(?:[A-Za-z_]+(?:\s*\(\s*\d+\s*(?:,\s*\d+\s*)?\))?"
    r"|INTERVAL(?:\s+[A-Za-z]+(?:\s+TO\s+[A-Za-z]+)?)?)$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Parameter:
    """A named parameter: `value` None is SQL NULL; `type` as the request spelled it."""

    name: str
    value: str | None
    type: str = "STRING"


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    """A validated `ExecuteStatementRequest`."""

    statement: str
    warehouse_id: str
    catalog: str | None = None
    schema: str | None = None
    parameters: tuple[Parameter, ...] = ()
    wait_timeout_s: float = 10.0
    on_wait_timeout: str = "CONTINUE"
    disposition: str = "INLINE"
    format: str = "JSON_ARRAY"
    row_limit: int | None = None
    byte_limit: int | None = None
    query_tags: tuple[tuple[str, str | None], ...] = ()


def parse_execute_request(body: Any) -> ExecuteRequest:
    """Validate a decoded JSON body into an `ExecuteRequest`, or raise `ApiError`."""
    if not isinstance(body, dict):
        raise ApiError(400, "MALFORMED_REQUEST", "Invalid JSON given in the body of the request")
    statement = _required_string(body, "statement")
    if len(statement.encode()) > MAX_STATEMENT_BYTES:
        raise invalid("statement is larger than the 16 MiB limit")
    fmt = _enum(body, "format", FORMATS, "JSON_ARRAY")
    disposition = _disposition(body, fmt)
    if disposition == "INLINE" and fmt != "JSON_ARRAY":
        raise invalid(f"format {fmt} is not supported with disposition INLINE")
    return ExecuteRequest(
        statement=statement,
        warehouse_id=_required_string(body, "warehouse_id"),
        catalog=_optional_string(body, "catalog"),
        schema=_optional_string(body, "schema"),
        parameters=_parameters(body.get("parameters")),
        wait_timeout_s=_wait_timeout(body.get("wait_timeout")),
        on_wait_timeout=_enum(body, "on_wait_timeout", ON_WAIT_TIMEOUT, "CONTINUE"),
        disposition=disposition,
        format=fmt,
        row_limit=_limit(body, "row_limit"),
        byte_limit=_limit(body, "byte_limit"),
        query_tags=_query_tags(body.get("query_tags")),
    )


def _required_string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{name} is required and must be a non-empty string")
    return value


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{name} must be a non-empty string")
    return value


def _enum(body: dict[str, Any], name: str, allowed: frozenset[str], default: str) -> str:
    value = body.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise invalid(f"{name} must be one of {', '.join(sorted(allowed))}")
    return str(value)


def _disposition(body: dict[str, Any], fmt: str) -> str:
    if body.get("disposition") == "INLINE_OR_EXTERNAL_LINKS":
        # Undocumented value sent by the SQL connector's SEA backend: small JSON inline,
        # anything else as links.
        return "INLINE" if fmt == "JSON_ARRAY" else "EXTERNAL_LINKS"
    return _enum(body, "disposition", DISPOSITIONS, "INLINE")


def _wait_timeout(value: Any) -> float:
    if value is None:
        return 10.0
    match = _WAIT_TIMEOUT.match(value) if isinstance(value, str) else None
    seconds = float(match[1]) if match else -1.0
    if seconds != 0 and not 5 <= seconds <= 50:
        raise invalid("wait_timeout must be 0s or between 5s and 50s")
    return seconds


def _limit(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # int64 fields may travel as numeric strings (reference §5)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise invalid(f"{name} must be a non-negative integer of at most 2^63-1")
    return value


def _parameters(value: Any) -> tuple[Parameter, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid("parameters must be a list of {name, value, type}")
    parameters: dict[str, Parameter] = {}
    for item in value:
        if not isinstance(item, dict):
            raise invalid("parameters must be a list of {name, value, type}")
        name = item.get("name")
        if not isinstance(name, str) or not _IDENTIFIER.match(name):
            raise invalid("parameter name must be an identifier such as `start_date`")
        if name in parameters:
            raise invalid(f"parameter {name} is given more than once")
        raw_value = item.get("value")
        if raw_value is not None and not isinstance(raw_value, str):
            raise invalid(f"parameter {name}: value must be a string or null")
        type_ = item.get("type") or "STRING"
        if not isinstance(type_, str) or not _PARAM_TYPE.match(type_.strip()):
            raise invalid(f"parameter {name}: type must be a scalar SQL type such as DATE")
        parameters[name] = Parameter(name, raw_value, type_.strip())
    return tuple(parameters.values())


def _query_tags(value: Any) -> tuple[tuple[str, str | None], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid("query_tags must be a list of {key, value}")
    tags: list[tuple[str, str | None]] = []
    for item in value:
        key = item.get("key") if isinstance(item, dict) else None
        tag_value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(key, str) or not key or not isinstance(tag_value, str | None):
            raise invalid("query_tags items must be {key: string, value?: string}")
        tags.append((key, tag_value))
    return tuple(tags[:MAX_QUERY_TAGS])  # more than 20 are coerced to 20 (reference §12)
