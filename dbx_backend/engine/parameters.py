"""Named parameters: our callers' JSON values as Statement Execution parameters (reference §11).

Values travel as typed strings beside the SQL, never spliced into it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from dbx_backend.warehouse.wire import StatementParameter

ParamScalar = str | int | float | bool | None
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


class InvalidQuery(ValueError):
    """The query request itself is malformed (e.g. a parameter that cannot be sent)."""


class ParamOutOfRange(InvalidQuery):
    """A parameter's value does not fit the SQL type it is sent as; `.param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class TypedParam:
    """A parameter with an explicit SQL type, e.g. `{"value": "2024-01-01", "type": "DATE"}`."""

    value: ParamScalar
    type: str


def _format_param_value(value: ParamScalar) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return str(value)


def _infer_type(value: ParamScalar) -> str | None:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, str):
        return "STRING"
    return None  # NULL: the warehouse's default type


def to_statement_parameters(
    params: Mapping[str, ParamScalar | TypedParam],
) -> list[StatementParameter]:
    """Named parameters as the API wants them: values are strings, never spliced into SQL."""
    out = []
    for name, given in params.items():
        sql_type: str | None
        if not PARAM_NAME.match(name):
            raise InvalidQuery(f"parameter name {name!r} is not an identifier")
        if isinstance(given, TypedParam):
            value, sql_type = given.value, given.type
        elif given is None or isinstance(given, str | int | float | bool):
            value, sql_type = given, _infer_type(given)
            if isinstance(given, int) and not BIGINT_MIN <= given <= BIGINT_MAX:
                raise ParamOutOfRange(
                    name,
                    f"parameter {name!r}: a JSON integer is sent as BIGINT, which holds "
                    f"-2^63 .. 2^63-1; send a larger number as "
                    f'{{"value": "<digits>", "type": "DECIMAL(38,0)"}}',
                )
        else:
            raise InvalidQuery(f"parameter {name!r} must be a string, number, boolean or null")
        out.append(StatementParameter(name=name, value=_format_param_value(value), type=sql_type))
    return out
