"""The one place where a Databricks value becomes a JSON value.

A column's type alone decides a value's JSON form (DESIGN.md, "The API contract").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JsonValue = Any  # str | int | float | bool | None | list[JsonValue] | dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class Column:
    """One result column as the API returns it."""

    name: str
    type: str
    type_text: str
    position: int
    nullable: bool | None = None
    precision: int | None = None
    scale: int | None = None

    def to_json(self) -> dict[str, JsonValue]:
        """The API's column object; `precision`/`scale` only when the type has them."""
        out: dict[str, JsonValue] = {
            "name": self.name,
            "type": self.type,
            "type_text": self.type_text,
            "position": self.position,
            "nullable": self.nullable,
        }
        if self.precision is not None:
            out["precision"] = self.precision
        if self.scale is not None:
            out["scale"] = self.scale
        return out


@dataclass(frozen=True, slots=True)
class NormalizeOptions:
    """Client choices about value rendering."""

    long_as_string: bool = False
