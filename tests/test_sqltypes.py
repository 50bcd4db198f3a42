"""Type texts parsed into types, and the JSON shape each type's values take (`json_type`)."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from dbx_backend.api import models
from dbx_backend.engine import sqltypes
from dbx_backend.engine.normalize import NormalizeOptions, columns_from_manifest
from dbx_backend.engine.sqltypes import SqlType, json_shape, parse_type
from dbx_backend.warehouse.wire import ResultManifest

LONG = SqlType("LONG")
INT = SqlType("INT")
STRING = SqlType("STRING")

TYPE_TEXTS = [
    pytest.param("BIGINT", "BIGINT", LONG, id="scalar-alias"),
    pytest.param("DECIMAL", "DECIMAL(10,2)", SqlType("DECIMAL", 10, 2), id="decimal"),
    pytest.param("DECIMAL", "decimal(7)", SqlType("DECIMAL", 7, 0), id="decimal-scale-0"),
    pytest.param("ARRAY", "ARRAY<INT>", SqlType("ARRAY", element=INT), id="array"),
    pytest.param(
        "ARRAY",
        "array<struct<a:int,b:string>>",
        SqlType("ARRAY", element=SqlType("STRUCT", fields=(("a", INT), ("b", STRING)))),
        id="lower-case",
    ),
    pytest.param(
        "STRUCT",
        "STRUCT<a: BIGINT NOT NULL, b: DECIMAL(4, 1) COMMENT 'the price, in €'>",
        SqlType("STRUCT", fields=(("a", LONG), ("b", SqlType("DECIMAL", 4, 1)))),
        id="spaces-not-null-comment",
    ),
    pytest.param(
        "STRUCT",
        "STRUCT<`a b`:INT,`x``y`:STRING,`c:d`:BIGINT>",
        SqlType("STRUCT", fields=(("a b", INT), ("x`y", STRING), ("c:d", LONG))),
        id="quoted-field-names",
    ),
    pytest.param("STRUCT", "STRUCT<>", SqlType("STRUCT", fields=()), id="empty-struct"),
    pytest.param(
        "MAP",
        "MAP<STRING,ARRAY<DECIMAL(38,18)>>",
        SqlType("MAP", key=STRING, value=SqlType("ARRAY", element=SqlType("DECIMAL", 38, 18))),
        id="map",
    ),
    pytest.param(
        "STRUCT",
        "STRUCT<i:INTERVAL DAY TO SECOND,v:VARCHAR(10),g:GEOMETRY(4326)>",
        SqlType(
            "STRUCT",
            fields=(("i", SqlType("INTERVAL")), ("v", STRING), ("g", SqlType("GEOMETRY"))),
        ),
        id="interval-varchar-geometry",
    ),
    pytest.param("ARRAY", "ARRAY", SqlType("ARRAY"), id="array-without-its-element"),
    pytest.param("ARRAY", "ARRAY<INT", SqlType("ARRAY"), id="unterminated"),
    pytest.param("MAP", "MAP<INT>", SqlType("MAP"), id="map-without-value"),
    pytest.param("STRUCT", "STRUCT<a:INT>>", SqlType("STRUCT"), id="text-after-the-type"),
    pytest.param("ARRAY", "STRUCT<a:INT>", SqlType("ARRAY"), id="type-name-decides"),
    pytest.param("STRUCT", "STRUCT<a:INT;b:INT>", SqlType("STRUCT"), id="bad-character"),
]


@pytest.mark.parametrize(("type_name", "type_text", "expected"), TYPE_TEXTS)
def test_type_text_parses_into_its_parts(type_name: str, type_text: str, expected: SqlType) -> None:
    assert parse_type(type_name, type_text) == expected


def test_a_type_whose_parts_are_not_described_is_not_known() -> None:
    assert [parse_type(t, t).known for t in ("ARRAY", "MAP", "STRUCT", "INT")] == [
        False,
        False,
        False,
        True,
    ]
    assert parse_type("ARRAY", "ARRAY<STRUCT<>>").known


def test_manifest_precision_and_scale_win_over_the_type_text() -> None:
    assert parse_type("DECIMAL", "DECIMAL(10,2)", 12, 4) == SqlType("DECIMAL", 12, 4)


SHAPES = [
    pytest.param("LONG", "BIGINT", False, {"json_type": "number", "type": "LONG"}, id="long"),
    pytest.param(
        "LONG", "BIGINT", True, {"json_type": "string", "type": "LONG"}, id="long-as-string"
    ),
    pytest.param("DOUBLE", "DOUBLE", False, {"json_type": "number", "type": "DOUBLE"}, id="double"),
    pytest.param(
        "DECIMAL", "DECIMAL(4,2)", False, {"json_type": "string", "type": "DECIMAL"}, id="decimal"
    ),
    pytest.param(
        "BOOLEAN", "BOOLEAN", False, {"json_type": "boolean", "type": "BOOLEAN"}, id="boolean"
    ),
    pytest.param(
        "TIMESTAMP_NTZ",
        "TIMESTAMP_NTZ",
        False,
        {"json_type": "string", "type": "TIMESTAMP_NTZ"},
        id="ntz",
    ),
    pytest.param("NULL", "VOID", False, {"json_type": "null", "type": "NULL"}, id="null"),
    pytest.param(
        "VARIANT", "VARIANT", False, {"json_type": "any", "type": "VARIANT"}, id="variant"
    ),
    pytest.param(
        "GEOMETRY",
        "GEOMETRY(4326)",
        False,
        {"json_type": "string", "type": "GEOMETRY"},
        id="geometry",
    ),
    pytest.param(
        "ARRAY",
        "ARRAY<BIGINT>",
        True,
        {"json_type": "array", "type": "ARRAY", "items": {"json_type": "string", "type": "LONG"}},
        id="array-of-long-as-string",
    ),
    pytest.param(
        "STRUCT",
        "STRUCT<id:BIGINT,price:DECIMAL(10,2),tags:ARRAY<STRING>>",
        False,
        {
            "json_type": "object",
            "type": "STRUCT",
            "fields": [
                {"name": "id", "json_type": "number", "type": "LONG"},
                {"name": "price", "json_type": "string", "type": "DECIMAL"},
                {
                    "name": "tags",
                    "json_type": "array",
                    "type": "ARRAY",
                    "items": {"json_type": "string", "type": "STRING"},
                },
            ],
        },
        id="struct",
    ),
    pytest.param(
        "MAP",
        "MAP<STRING,DOUBLE>",
        False,
        {"json_type": "object", "type": "MAP", "values": {"json_type": "number", "type": "DOUBLE"}},
        id="map-string-keys",
    ),
    pytest.param(
        "MAP",
        "MAP<BIGINT,BOOLEAN>",
        True,
        {
            "json_type": "array",
            "type": "MAP",
            "items": {
                "json_type": "object",
                "fields": [
                    {"name": "key", "json_type": "string", "type": "LONG"},
                    {"name": "value", "json_type": "boolean", "type": "BOOLEAN"},
                ],
            },
        },
        id="map-other-keys",
    ),
    pytest.param(
        "ARRAY",
        "ARRAY",
        False,
        {"json_type": "array", "type": "ARRAY", "items": {"json_type": "any"}},
        id="array?",
    ),
    pytest.param(
        "STRUCT",
        "STRUCT",
        False,
        {"json_type": "object", "type": "STRUCT", "values": {"json_type": "any"}},
        id="struct?",
    ),
    pytest.param("MAP", "MAP", False, {"json_type": "any", "type": "MAP"}, id="map-keys-unknown"),
    pytest.param(
        "ARRAY",
        "ARRAY<FANCY>",
        False,
        {
            "json_type": "array",
            "type": "ARRAY",
            "items": {"json_type": "string", "type": "UNKNOWN"},
        },
        id="unknown-part",
    ),
]


@pytest.mark.parametrize(("type_name", "type_text", "long_as_string", "expected"), SHAPES)
def test_json_shape_says_how_values_are_written(
    type_name: str, type_text: str, long_as_string: bool, expected: dict[str, Any]
) -> None:
    shape = json_shape(parse_type(type_name, type_text), long_as_string=long_as_string)

    assert shape.to_json() == expected


def test_columns_carry_the_json_shape_of_the_options_they_were_read_with() -> None:
    manifest = ResultManifest.model_validate(
        {
            "schema": {
                "columns": [{"name": "xs", "type_name": "ARRAY", "type_text": "ARRAY<BIGINT>"}]
            }
        }
    )

    (plain,) = columns_from_manifest(manifest, NormalizeOptions())
    (strings,) = columns_from_manifest(manifest, NormalizeOptions(long_as_string=True))

    assert plain.to_json()["items"] == {"json_type": "number", "type": "LONG"}
    assert strings.to_json() == {
        "name": "xs",
        "type": "ARRAY",
        "type_text": "ARRAY<BIGINT>",
        "position": 0,
        "nullable": None,
        "json_type": "array",
        "items": {"json_type": "string", "type": "LONG"},
    }


def test_a_type_name_outside_the_api_list_reports_as_unknown_with_its_text() -> None:
    manifest = ResultManifest.model_validate(
        {"schema": {"columns": [{"name": "x", "type_name": "FANCY", "type_text": "FANCY(3)"}]}}
    )

    (col,) = columns_from_manifest(manifest, NormalizeOptions())

    assert (col.type, col.type_text, col.to_json()["json_type"]) == (
        "UNKNOWN",
        "FANCY(3)",
        "string",
    )


def test_the_api_contract_lists_exactly_the_types_and_json_kinds_the_normalizer_reports() -> None:
    assert get_args(models.ColumnType) == sqltypes.TYPE_NAMES
    assert get_args(models.JsonKind) == get_args(sqltypes.JsonKind)
