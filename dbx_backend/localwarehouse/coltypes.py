"""DuckDB result types as Databricks reports them, and the SQL that renders each as its
JSON_ARRAY string form (reference §7.1, §7.3).

Values are converted inside DuckDB, vectorised, so large results never pass through per-value
Python code; the forms are those of the reference, with its unconfirmed points decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# DuckDB type id -> (type_name, type_text). DuckDB sums integers into HUGEINT where Databricks
# answers BIGINT, so HUGEINT reports as LONG; unsigned types widen to the next signed type.
_SCALARS: dict[str, tuple[str, str]] = {
    "boolean": ("BOOLEAN", "BOOLEAN"),
    "tinyint": ("BYTE", "TINYINT"),
    "smallint": ("SHORT", "SMALLINT"),
    "integer": ("INT", "INT"),
    "bigint": ("LONG", "BIGINT"),
    "hugeint": ("LONG", "BIGINT"),
    "utinyint": ("SHORT", "SMALLINT"),
    "usmallint": ("INT", "INT"),
    "uinteger": ("LONG", "BIGINT"),
    "ubigint": ("DECIMAL", "DECIMAL(20,0)"),
    "uhugeint": ("DECIMAL", "DECIMAL(38,0)"),
    "float": ("FLOAT", "FLOAT"),
    "double": ("DOUBLE", "DOUBLE"),
    "varchar": ("STRING", "STRING"),
    "date": ("DATE", "DATE"),
    "timestamp with time zone": ("TIMESTAMP", "TIMESTAMP"),
    "timestamp": ("TIMESTAMP_NTZ", "TIMESTAMP_NTZ"),
    "timestamp_s": ("TIMESTAMP_NTZ", "TIMESTAMP_NTZ"),
    "timestamp_ms": ("TIMESTAMP_NTZ", "TIMESTAMP_NTZ"),
    "timestamp_ns": ("TIMESTAMP_NTZ", "TIMESTAMP_NTZ"),
    "blob": ("BINARY", "BINARY"),
    "interval": ("INTERVAL", "INTERVAL"),
    "null": ("NULL", "VOID"),
}
_NESTED = frozenset({"list", "array", "struct", "map"})
_FLOATS = frozenset({"float", "double"})
_TIMESTAMPS_NTZ = frozenset({"timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns"})
_BIG_UNSIGNED = {"ubigint": 20, "uhugeint": 38}


@dataclass(frozen=True, slots=True)
class ColumnType:
    """How one result column is described in the manifest and rendered as text."""

    type_name: str
    type_text: str
    precision: int | None = None
    scale: int | None = None


def column_type(duckdb_type: Any) -> ColumnType:
    """The Databricks description of a DuckDB type (unknown types report as STRING)."""
    type_id = str(duckdb_type.id)
    if type_id == "decimal":
        params = dict(duckdb_type.children)
        precision, scale = int(params["precision"]), int(params["scale"])
        return ColumnType("DECIMAL", f"DECIMAL({precision},{scale})", precision, scale)
    if type_id in _BIG_UNSIGNED:
        return ColumnType(
            "DECIMAL", f"DECIMAL({_BIG_UNSIGNED[type_id]},0)", _BIG_UNSIGNED[type_id], 0
        )
    if type_id in _NESTED:
        return ColumnType(_nested_name(type_id), _type_text(duckdb_type))
    name, text = _SCALARS.get(type_id, ("STRING", "STRING"))
    return ColumnType(name, text)


def column_info(name: str, position: int, duckdb_type: Any) -> dict[str, Any]:
    """One `ColumnInfo` of the manifest schema (reference §5.3)."""
    described = column_type(duckdb_type)
    info: dict[str, Any] = {
        "name": name,
        "type_text": described.type_text,
        "type_name": described.type_name,
        "position": position,
    }
    if described.precision is not None:
        info["type_precision"] = described.precision
        info["type_scale"] = described.scale
    if described.type_name == "INTERVAL":
        # DuckDB intervals mix months, days and microseconds, so no narrower qualifier is honest.
        info["type_interval_type"] = "DAY TO SECOND"
    return info


def needs_narrowing(duckdb_type: Any) -> bool:
    """True for a type whose values are not of the type it reports: HUGEINT (BIGINT), and
    types reported as STRING that DuckDB holds otherwise (TIME, UUID, ENUM, ...)."""
    type_id = str(duckdb_type.id)
    return type_id == "hugeint" or _reported_as_text(type_id)


def narrowed_expression(ref: str, duckdb_type: Any) -> str:
    """DuckDB SQL giving column `ref` the type it reports: a HUGEINT value outside BIGINT then
    fails the statement, as an overflow does on Databricks, instead of reaching a client as a
    LONG that no JSON reader holds; a type reported as STRING becomes its text, so an
    ARROW_STREAM chunk carries it as `utf8`, as the manifest says, not as DuckDB's own type."""
    type_id = str(duckdb_type.id)
    if type_id == "hugeint":
        return f"CAST({ref} AS BIGINT)"
    if _reported_as_text(type_id):
        return f"CAST({ref} AS VARCHAR)"
    return ref


def _reported_as_text(type_id: str) -> bool:
    # What `column_type` reports as STRING without DuckDB holding text.
    known = type_id in _SCALARS or type_id in _NESTED or type_id in _BIG_UNSIGNED
    return not known and type_id != "decimal"


def string_expression(ref: str, duckdb_type: Any) -> str:
    """DuckDB SQL rendering column `ref` (e.g. `#1`) as its JSON_ARRAY string form, NULL kept."""
    type_id = str(duckdb_type.id)
    if type_id in _NESTED:
        # Nested values are JSON text with nested numbers as JSON numbers (reference §7.3),
        # and nested BINARY as base64, as at the top (DuckDB's own JSON would escape bytes).
        return f"CAST(to_json({_blobs_as_base64(ref, duckdb_type)}) AS VARCHAR)"
    if type_id in _FLOATS:
        return (
            f"CASE WHEN isnan({ref}) THEN 'NaN' WHEN {ref} = 'infinity' THEN 'Infinity' "
            f"WHEN {ref} = '-infinity' THEN '-Infinity' ELSE CAST({ref} AS VARCHAR) END"
        )
    if type_id == "timestamp with time zone":
        return _timestamp_text(ref, "Z")
    if type_id in _TIMESTAMPS_NTZ:
        return _timestamp_text(f"CAST({ref} AS TIMESTAMP)", "")
    if type_id == "blob":
        return f"to_base64({ref})"
    if type_id == "varchar":
        return ref
    return f"CAST({ref} AS VARCHAR)"


def _blobs_as_base64(ref: str, duckdb_type: Any, depth: int = 0) -> str:
    """`ref` with every BLOB inside it replaced by its base64 text; NULLs stay NULL."""
    type_id = str(duckdb_type.id)
    if type_id == "blob":
        return f"to_base64({ref})"
    if not _holds_blob(duckdb_type):
        return ref
    item = f"e{depth}"
    if type_id in ("list", "array"):
        child = _blobs_as_base64(item, dict(duckdb_type.children)["child"], depth + 1)
        return f"list_transform({ref}, lambda {item}: {child})"
    if type_id == "map":
        parts = dict(duckdb_type.children)
        key = _blobs_as_base64(f"{item}.key", parts["key"], depth + 1)
        value = _blobs_as_base64(f"{item}.value", parts["value"], depth + 1)
        entry = f"struct_pack(key := {key}, value := {value})"
        return f"map_from_entries(list_transform(map_entries({ref}), lambda {item}: {entry}))"
    fields = ", ".join(
        f"{_quoted(name)} := {_blobs_as_base64(_field(ref, name), child, depth + 1)}"
        for name, child in duckdb_type.children
    )
    return f"CASE WHEN {ref} IS NULL THEN NULL ELSE struct_pack({fields}) END"


def _holds_blob(duckdb_type: Any) -> bool:
    type_id = str(duckdb_type.id)
    if type_id == "blob":
        return True
    if type_id not in _NESTED:
        return False
    return any(_holds_blob(child) for _, child in duckdb_type.children)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _field(ref: str, name: str) -> str:
    literal = "'" + name.replace("'", "''") + "'"
    return f"struct_extract({ref}, {literal})"


def _timestamp_text(ref: str, suffix: str) -> str:
    # ISO 8601 with `T`, milliseconds always and microseconds when present; the session time
    # zone is UTC, so TIMESTAMP values end in `Z` (reference §7.3, example 14.1).
    return (
        f"CASE WHEN microsecond({ref}) % 1000 = 0 "
        f"THEN strftime({ref}, '%Y-%m-%dT%H:%M:%S.%g{suffix}') "
        f"ELSE strftime({ref}, '%Y-%m-%dT%H:%M:%S.%f{suffix}') END"
    )


def _nested_name(type_id: str) -> str:
    return {"list": "ARRAY", "array": "ARRAY", "struct": "STRUCT", "map": "MAP"}[type_id]


def _type_text(duckdb_type: Any) -> str:
    type_id = str(duckdb_type.id)
    if type_id in ("list", "array"):
        child = dict(duckdb_type.children)["child"]
        return f"ARRAY<{_type_text(child)}>"
    if type_id == "map":
        parts = dict(duckdb_type.children)
        return f"MAP<{_type_text(parts['key'])},{_type_text(parts['value'])}>"
    if type_id == "struct":
        fields = ",".join(f"{name}:{_type_text(child)}" for name, child in duckdb_type.children)
        return f"STRUCT<{fields}>"
    return column_type(duckdb_type).type_text
