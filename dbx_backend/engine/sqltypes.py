"""SQL types as the warehouse describes them, parsed, and the JSON shape their values take.

A column's `type_text` is the full type, e.g. `ARRAY<STRUCT<id: BIGINT, price: DECIMAL(10,2)>>`
(reference §7.1: case and spacing vary, so parsing is case-insensitive and tolerant). The tree
lets the normalizer apply one value rule at every depth, and tells the client how each value is
encoded (`json_type`). A `type_text` that does not parse still gives its top-level type; its
parts are then unknown and nested values keep the form their JSON text gives them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

JsonKind = Literal["number", "string", "boolean", "array", "object", "null", "any"]

# SQL spellings -> the `type_name` the API uses for them (reference §7.1).
TYPE_ALIASES = {
    "TINYINT": "BYTE",
    "SMALLINT": "SHORT",
    "INTEGER": "INT",
    "BIGINT": "LONG",
    "REAL": "FLOAT",
    "DEC": "DECIMAL",
    "NUMERIC": "DECIMAL",
    "VARCHAR": "STRING",
    "VOID": "NULL",
    "TIMESTAMP_LTZ": "TIMESTAMP",
}
# Every `type` the API reports: the protocol's enum plus the names seen outside it (reference
# §7.1); any other type reports as UNKNOWN, and its `type_text` says what it is.
TYPE_NAMES = (
    "ARRAY", "BINARY", "BOOLEAN", "BYTE", "CHAR", "DATE", "DECIMAL", "DOUBLE", "FLOAT",
    "GEOGRAPHY", "GEOMETRY", "INT", "INTERVAL", "LONG", "MAP", "NULL", "SHORT", "STRING",
    "STRUCT", "TIMESTAMP", "TIMESTAMP_NTZ", "USER_DEFINED_TYPE", "VARIANT", "UNKNOWN",
)  # fmt: skip
NESTED_KINDS = frozenset({"ARRAY", "MAP", "STRUCT"})
STRING_KINDS = frozenset({"STRING", "CHAR"})
_NUMBERS = frozenset({"BYTE", "SHORT", "INT", "LONG", "FLOAT", "DOUBLE"})


@dataclass(frozen=True, slots=True)
class SqlType:
    """One SQL type; nested types carry their parts, or None when `type_text` did not say."""

    kind: str  # the API's type_name: LONG, DECIMAL, ARRAY, ...; unknown names as written
    precision: int | None = None
    scale: int | None = None
    element: SqlType | None = None  # ARRAY
    key: SqlType | None = None  # MAP
    value: SqlType | None = None  # MAP
    fields: tuple[tuple[str, SqlType], ...] | None = None  # STRUCT, in order

    @property
    def known(self) -> bool:
        """Whether every part of a nested type is known (always true for scalar types)."""
        if self.kind == "ARRAY":
            return self.element is not None
        if self.kind == "MAP":
            return self.key is not None and self.value is not None
        if self.kind == "STRUCT":
            return self.fields is not None
        return True

    def contains(self, kinds: frozenset[str]) -> bool:
        """Whether this type or any of its parts is one of `kinds`."""
        return self.kind in kinds or any(part.contains(kinds) for part in self.parts())

    def parts(self) -> tuple[SqlType, ...]:
        """The types directly inside this one."""
        inner = (self.element, self.key, self.value, *(t for _, t in self.fields or ()))
        return tuple(t for t in inner if t is not None)


def canonical_kind(name: str) -> str:
    """The API's type_name for a type word: upper case, SQL aliases resolved."""
    upper = name.upper()
    return TYPE_ALIASES.get(upper, upper)


def parse_type(
    type_name: str, type_text: str, precision: int | None = None, scale: int | None = None
) -> SqlType:
    """The type of a column; `precision`/`scale` from the manifest win over `type_text`."""
    kind = canonical_kind(type_name)
    try:
        parsed = _Parser(type_text).whole()
    except ValueError:
        parsed = SqlType(kind)
    if parsed.kind != kind:
        # The warehouse's type_name decides; the text is trusted only where they agree.
        parsed = SqlType(kind)
    if kind == "DECIMAL":
        parsed = SqlType(
            kind,
            precision if precision is not None else parsed.precision,
            scale if scale is not None else parsed.scale,
        )
    return parsed


_TOKEN = re.compile(
    r"\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<number>[0-9]+)|(?P<quoted>`(?:[^`]|``)*`)"
    r"|(?P<string>'(?:[^'\\]|\\.)*')|(?P<punct>[<>(),:]))"
)


class _Parser:
    """A recursive-descent reader of `type_text`; raises ValueError on anything unexpected."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position, text = 0, text.rstrip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise ValueError("not a type")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match[kind]))
            position = match.end()
        self.at = 0

    def whole(self) -> SqlType:
        parsed = self.type_()
        if self.at != len(self.tokens):
            raise ValueError("text after the type")
        return parsed

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def take(self, kind: str, text: str | None = None) -> str:
        got_kind, got = self.peek()
        if got_kind != kind or (text is not None and got.upper() != text):
            raise ValueError("unexpected token")
        self.at += 1
        return got

    def taking(self, text: str) -> bool:
        kind, got = self.peek()
        if kind in ("punct", "word") and got.upper() == text:
            self.at += 1
            return True
        return False

    def type_(self) -> SqlType:
        kind = canonical_kind(self.take("word"))
        if kind == "ARRAY":
            self.take("punct", "<")
            element = self.type_()
            self.take("punct", ">")
            return SqlType(kind, element=element)
        if kind == "MAP":
            self.take("punct", "<")
            key = self.type_()
            self.take("punct", ",")
            value = self.type_()
            self.take("punct", ">")
            return SqlType(kind, key=key, value=value)
        if kind == "STRUCT":
            return SqlType(kind, fields=self.struct_fields())
        params = self.params()
        if kind == "DECIMAL" and params:
            # DECIMAL(p) is DECIMAL(p,0); without any, the scale is not known here.
            return SqlType(kind, params[0], params[1] if len(params) > 1 else 0)
        if kind == "INTERVAL":
            while self.peek()[0] == "word":  # YEAR TO MONTH, DAY TO SECOND, ...
                self.at += 1
        return SqlType(kind)

    def params(self) -> list[int]:
        if not self.taking("("):
            return []
        values = [int(self.take("number"))]
        while self.taking(","):
            values.append(int(self.take("number")))
        self.take("punct", ")")
        return values

    def struct_fields(self) -> tuple[tuple[str, SqlType], ...]:
        self.take("punct", "<")
        fields: list[tuple[str, SqlType]] = []
        if self.taking(">"):
            return ()
        while True:
            kind, name = self.peek()
            if kind == "quoted":
                name = name[1:-1].replace("``", "`")
            elif kind not in ("word", "number"):
                raise ValueError("not a field name")
            self.at += 1
            self.taking(":")
            fields.append((name, self.type_()))
            if self.taking("NOT"):
                self.take("word", "NULL")
            if self.taking("COMMENT"):
                self.take("string")
            if self.taking(">"):
                return tuple(fields)
            self.take("punct", ",")


@dataclass(frozen=True, slots=True)
class JsonShape:
    """How the values of one type are written in JSON, down to the parts of nested values.

    `items` describes an array's elements; `fields` a struct's members in order; `values` the
    values of an object keyed by arbitrary strings (a MAP with string keys). `type` is the SQL
    type of the values (so a client can tell a LONG sent as a string from a DECIMAL); None
    where there is none (a map entry's `{key, value}`) or it is not known.
    """

    json_type: JsonKind
    items: JsonShape | None = None
    fields: tuple[tuple[str, JsonShape], ...] | None = None
    values: JsonShape | None = None
    type: str | None = None

    def to_json(self) -> dict[str, Any]:
        """`{"json_type": ...}` plus `type`, `items`, `fields` or `values` where they apply."""
        out: dict[str, Any] = {"json_type": self.json_type}
        if self.type is not None:
            out["type"] = self.type
        if self.items is not None:
            out["items"] = self.items.to_json()
        if self.fields is not None:
            out["fields"] = [{"name": name, **shape.to_json()} for name, shape in self.fields]
        if self.values is not None:
            out["values"] = self.values.to_json()
        return out


_ANY = JsonShape("any")


def json_shape(sql_type: SqlType, *, long_as_string: bool) -> JsonShape:
    """The JSON form of `sql_type`'s values under the given options (the README's table)."""
    shape = _shape(sql_type, long_as_string)
    reported = sql_type.kind if sql_type.kind in TYPE_NAMES else "UNKNOWN"
    return replace(shape, type=reported)


def _shape(sql_type: SqlType, long_as_string: bool) -> JsonShape:
    kind = sql_type.kind
    if kind == "LONG" and long_as_string:
        return JsonShape("string")
    if kind in _NUMBERS:
        return JsonShape("number")
    if kind == "BOOLEAN":
        return JsonShape("boolean")
    if kind == "NULL":
        return JsonShape("null")
    if kind == "VARIANT":
        return _ANY
    if kind == "ARRAY":
        element = sql_type.element
        return JsonShape(
            "array",
            items=_ANY if element is None else json_shape(element, long_as_string=long_as_string),
        )
    if kind == "STRUCT":
        if sql_type.fields is None:
            return JsonShape("object", values=_ANY)
        return JsonShape(
            "object",
            fields=tuple(
                (name, json_shape(part, long_as_string=long_as_string))
                for name, part in sql_type.fields
            ),
        )
    if kind == "MAP":
        if sql_type.key is None or sql_type.value is None:
            return _ANY  # the form depends on the key type, which is not known
        value = json_shape(sql_type.value, long_as_string=long_as_string)
        if sql_type.key.kind in STRING_KINDS:
            return JsonShape("object", values=value)
        key = json_shape(sql_type.key, long_as_string=long_as_string)
        entry = JsonShape("object", fields=(("key", key), ("value", value)))
        return JsonShape("array", items=entry)
    # DECIMAL, dates, timestamps, BINARY, strings, INTERVAL and types we do not know: text.
    return JsonShape("string")
