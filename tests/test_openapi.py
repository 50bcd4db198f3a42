"""The OpenAPI document: well-formed OpenAPI 3.1, complete, self-contained, and what is served.

Also checks that the committed TypeScript declarations are what generation gives now.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.api.errors import ERROR_RESPONSES, INTERNAL
from dbx_backend.api.models import StatementState
from dbx_backend.api.openapi import openapi_document
from dbx_backend.app import create_app
from dbx_backend.cli import main
from dbx_backend.config import Settings

ROOT = Path(__file__).resolve().parent.parent
TYPES = ROOT / "clients" / "typescript" / "api.d.ts"
GENERATOR = ROOT / "clients" / "typescript" / "node_modules" / ".bin" / "openapi-typescript"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Methods aiohttp adds by itself: HEAD beside every GET, OPTIONS for CORS preflight.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
TOP_LEVEL = {
    "openapi",
    "info",
    "jsonSchemaDialect",
    "servers",
    "paths",
    "webhooks",
    "components",
    "security",
    "tags",
    "externalDocs",
}
PATH_ITEM = HTTP_METHODS | {"$ref", "summary", "description", "servers", "parameters"}
OPERATION = {
    "tags",
    "summary",
    "description",
    "externalDocs",
    "operationId",
    "parameters",
    "requestBody",
    "responses",
    "callbacks",
    "deprecated",
    "security",
    "servers",
}
COMPONENTS = {
    "schemas",
    "responses",
    "parameters",
    "examples",
    "requestBodies",
    "headers",
    "securitySchemes",
    "links",
    "callbacks",
    "pathItems",
}
MEDIA_TYPE = {"schema", "example", "examples", "encoding"}
PARAMETER_PLACES = {"query", "header", "path", "cookie"}
# OpenAPI ignores header parameters with these names; they are described elsewhere.
IGNORED_HEADERS = {"accept", "content-type", "authorization"}
SECURITY_TYPES = {"apiKey", "http", "mutualTLS", "oauth2", "openIdConnect"}
STATUS_KEY = re.compile(r"^(default|[1-5]XX|[1-5]\d\d)$")
COMPONENT_NAME = re.compile(r"^[a-zA-Z0-9.\-_]+$")

# JSON Schema keywords whose value is a schema, a list of schemas, or a map of name -> schema.
ONE_SCHEMA = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
)
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")


def _extra_keys(where: str, obj: dict[str, Any], allowed: set[str]) -> list[str]:
    return [
        f"{where}: unknown field {key!r}"
        for key in obj
        if key not in allowed and not key.startswith("x-")
    ]


def _subschemas(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for keyword in ONE_SCHEMA:
        if keyword in schema:
            yield keyword, schema[keyword]
    for keyword in SCHEMA_LISTS:
        for index, item in enumerate(schema.get(keyword, [])):
            yield f"{keyword}/{index}", item
    for keyword in SCHEMA_MAPS:
        for name, item in schema.get(keyword, {}).items():
            yield f"{keyword}/{name}", item


def schema_problems(where: str, schema: Any) -> list[str]:
    """OpenAPI 3.0 habits that are wrong in a 3.1 (JSON Schema 2020-12) schema."""
    if isinstance(schema, bool):
        return []
    if not isinstance(schema, dict):
        return [f"{where}: a schema must be an object or a boolean"]
    problems = []
    if "nullable" in schema:
        problems.append(f"{where}: 'nullable' is not OpenAPI 3.1; use type 'null'")
    for keyword in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(schema.get(keyword), bool):
            problems.append(f"{where}: {keyword} must be a number in OpenAPI 3.1")
    if "$ref" in schema and "definitions" in str(schema["$ref"]):
        problems.append(f"{where}: $ref into 'definitions'; components live elsewhere")
    for keyword, subschema in _subschemas(schema):
        problems += schema_problems(f"{where}/{keyword}", subschema)
    return problems


def _content_problems(where: str, content: Any) -> list[str]:
    if not isinstance(content, dict) or not content:
        return [f"{where}: content must name at least one media type"]
    problems = []
    for media, media_type in content.items():
        problems += _extra_keys(f"{where}/{media}", media_type, MEDIA_TYPE)
        if "schema" in media_type:
            problems += schema_problems(f"{where}/{media}/schema", media_type["schema"])
    return problems


def _parameter_problems(where: str, parameter: dict[str, Any]) -> list[str]:
    problems = []
    name, place = parameter.get("name"), parameter.get("in")
    if not isinstance(name, str) or place not in PARAMETER_PLACES:
        return [f"{where}: a parameter needs a name and 'in' among {sorted(PARAMETER_PLACES)}"]
    if place == "path" and parameter.get("required") is not True:
        problems.append(f"{where}: path parameter {name!r} must be required")
    if place == "header" and name.lower() in IGNORED_HEADERS:
        problems.append(f"{where}: header parameter {name!r} is ignored by OpenAPI")
    if ("schema" in parameter) == ("content" in parameter):
        problems.append(f"{where}: parameter {name!r} needs exactly one of schema and content")
    if "schema" in parameter:
        problems += schema_problems(f"{where}/schema", parameter["schema"])
    return problems


def _operation_problems(
    where: str, path: str, operation: dict[str, Any], schemes: set[str]
) -> list[str]:
    problems = _extra_keys(where, operation, OPERATION)
    parameters = operation.get("parameters", [])
    seen: set[tuple[str, str]] = set()
    for index, parameter in enumerate(parameters):
        problems += _parameter_problems(f"{where}/parameters/{index}", parameter)
        key = (parameter.get("name"), parameter.get("in"))
        if key in seen:
            problems.append(f"{where}: parameter {key} declared twice")
        seen.add(key)
    templated = set(re.findall(r"{([^}]+)}", path))
    declared = {p.get("name") for p in parameters if p.get("in") == "path"}
    if templated != declared:
        problems.append(f"{where}: path names {sorted(templated)}, parameters {sorted(declared)}")
    if "requestBody" in operation:
        body = operation["requestBody"]
        problems += _content_problems(f"{where}/requestBody/content", body.get("content"))
    responses = operation.get("responses")
    if not isinstance(responses, dict) or not responses:
        problems.append(f"{where}: responses must name at least one status")
        responses = {}
    for status, response in responses.items():
        at = f"{where}/responses/{status}"
        if not STATUS_KEY.match(status):
            problems.append(f"{at}: not a status code")
        if not isinstance(response.get("description"), str):
            problems.append(f"{at}: a response needs a description")
        for header, spec in response.get("headers", {}).items():
            if ("schema" in spec) == ("content" in spec):
                problems.append(f"{at}/headers/{header}: needs exactly one of schema and content")
        if "content" in response:
            problems += _content_problems(f"{at}/content", response["content"])
    for requirement in operation.get("security", []):
        problems += [
            f"{where}/security: unknown scheme {name!r}"
            for name in requirement
            if name not in schemes
        ]
    return problems


def openapi_problems(document: dict[str, Any]) -> list[str]:
    """What keeps `document` from being a well-formed OpenAPI 3.1 document, as far as checked."""
    problems = _extra_keys("document", document, TOP_LEVEL)
    if not re.fullmatch(r"3\.1\.\d+", str(document.get("openapi"))):
        problems.append("document: 'openapi' must be 3.1.x")
    info = document.get("info", {})
    if not (isinstance(info.get("title"), str) and isinstance(info.get("version"), str)):
        problems.append("info: title and version must be strings")
    components = document.get("components", {})
    problems += _extra_keys("components", components, COMPONENTS)
    for kind, entries in components.items():
        problems += [
            f"components/{kind}: bad name {name!r}"
            for name in entries
            if not COMPONENT_NAME.match(name)
        ]
    schemes = components.get("securitySchemes", {})
    for name, scheme in schemes.items():
        if scheme.get("type") not in SECURITY_TYPES:
            problems.append(f"securitySchemes/{name}: unknown type {scheme.get('type')!r}")
        if scheme.get("type") == "http" and not scheme.get("scheme"):
            problems.append(f"securitySchemes/{name}: an http scheme needs 'scheme'")
    for name, schema in components.get("schemas", {}).items():
        problems += schema_problems(f"components/schemas/{name}", schema)
    operation_ids: set[str] = set()
    for path, item in document.get("paths", {}).items():
        if not path.startswith("/"):
            problems.append(f"paths: {path!r} must start with '/'")
        problems += _extra_keys(f"paths/{path}", item, PATH_ITEM)
        for method in HTTP_METHODS & item.keys():
            operation = item[method]
            where = f"{method.upper()} {path}"
            problems += _operation_problems(where, path, operation, set(schemes))
            operation_id = operation.get("operationId")
            if operation_id in operation_ids:
                problems.append(f"{where}: operationId {operation_id!r} is used twice")
            operation_ids.add(operation_id)
    return problems


def references(node: Any) -> Iterator[str]:
    """Every `$ref` value anywhere in `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The node a local `$ref` (`#/a/b~1c`) points at; KeyError when there is none."""
    if not ref.startswith("#/"):
        raise KeyError(f"{ref} is not a reference inside the document")
    node: Any = document
    for token in ref[2:].split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) -> operation, for every operation in the document."""
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


@pytest.fixture
def app(settings: Settings) -> web.Application:
    return create_app(settings)


def registered_routes(app: web.Application) -> dict[tuple[str, str], str | None]:
    """(METHOD, path) -> route name, for every route the application answers."""
    return {
        (route.method, route.resource.canonical): route.name
        for route in app.router.routes()
        if route.resource is not None and route.method not in IMPLICIT_METHODS
    }


def test_the_document_is_well_formed_openapi_3_1(document: dict[str, Any]) -> None:
    assert openapi_problems(document) == []


def _break(document: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    broken = copy.deepcopy(document)
    change(broken)
    return broken


def _first_operation(document: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"]["/api/statements/{id}"]["get"]
    return operation


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(lambda d: d.update(openapi="3.0.3"), "must be 3.1.x", id="openapi-3.0"),
        pytest.param(lambda d: d["info"].pop("title"), "title and version", id="no-title"),
        pytest.param(
            lambda d: _first_operation(d).update(responses={}),
            "at least one status",
            id="no-responses",
        ),
        pytest.param(
            lambda d: _first_operation(d)["responses"].update({"2x0": {"description": "x"}}),
            "not a status code",
            id="bad-status",
        ),
        pytest.param(
            lambda d: _first_operation(d)["parameters"].clear(),
            "path names ['id'], parameters []",
            id="path-parameter-missing",
        ),
        pytest.param(
            lambda d: _first_operation(d)["parameters"][0].pop("required"),
            "must be required",
            id="path-parameter-optional",
        ),
        pytest.param(
            lambda d: _first_operation(d).update(operationId="query"),
            "used twice",
            id="duplicate-operation-id",
        ),
        pytest.param(
            lambda d: _first_operation(d).update(security=[{"oauth": []}]),
            "unknown scheme 'oauth'",
            id="unknown-security-scheme",
        ),
        pytest.param(
            lambda d: d["components"]["schemas"]["ColumnModel"]["properties"]["scale"].update(
                nullable=True
            ),
            "'nullable' is not OpenAPI 3.1",
            id="openapi-3.0-nullable",
        ),
        pytest.param(
            lambda d: _first_operation(d)["parameters"].append(
                {"name": "Authorization", "in": "header", "schema": {"type": "string"}}
            ),
            "is ignored by OpenAPI",
            id="authorization-as-parameter",
        ),
    ],
)
def test_the_structure_check_catches_a_broken_document(
    document: dict[str, Any], change: Callable[[dict[str, Any]], None], problem: str
) -> None:
    problems = openapi_problems(_break(document, change))
    assert any(problem in text for text in problems), problems


def test_the_document_passes_openapi_spec_validator(document: dict[str, Any]) -> None:
    validator: Any = importlib.import_module("openapi_spec_validator")  # in the dev extra
    validator.validate(document)


def test_every_schema_is_a_valid_json_schema_2020_12(document: dict[str, Any]) -> None:
    schemas = dict(document["components"]["schemas"])
    for (method, path), operation in operations(document).items():
        for parameter in operation.get("parameters", []):
            schemas[f"{method} {path} {parameter['name']}"] = parameter["schema"]
    jsonschema: Any = importlib.import_module("jsonschema")  # in the dev extra
    check = jsonschema.Draft202012Validator.check_schema
    for name, schema in schemas.items():
        try:
            check(schema)
        except Exception as exc:
            pytest.fail(f"{name}: {exc}")


def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    refs = set(references(document))
    assert refs, "the document is expected to share its models through $ref"
    unresolved = []
    for ref in sorted(refs):
        try:
            resolve(document, ref)
        except (KeyError, TypeError, IndexError):
            unresolved.append(ref)
    assert unresolved == []


def test_every_component_schema_is_used(document: dict[str, Any]) -> None:
    used = {ref.rsplit("/", 1)[1] for ref in references(document)}
    assert set(document["components"]["schemas"]) <= used


def test_every_registered_route_is_documented_with_every_method(
    document: dict[str, Any], app: web.Application
) -> None:
    assert set(registered_routes(app)) <= set(operations(document))


def test_every_documented_operation_is_a_registered_route(
    document: dict[str, Any], app: web.Application
) -> None:
    assert set(operations(document)) <= set(registered_routes(app))


def test_operation_ids_are_the_route_names(document: dict[str, Any], app: web.Application) -> None:
    routes = registered_routes(app)
    ids = {key: operation["operationId"] for key, operation in operations(document).items()}
    assert ids == {key: routes.get(key) for key in ids}


def test_every_operation_documents_its_error_envelope(document: dict[str, Any]) -> None:
    """Every 4xx/5xx body is a schema with the required `error` envelope (`/ready`'s 503 adds
    its readiness fields beside it)."""
    schemas = document["components"]["schemas"]

    def has_envelope(response: dict[str, Any]) -> bool:
        ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
        schema = schemas.get(str(ref).rsplit("/", 1)[-1], {})
        error = schema.get("properties", {}).get("error", {})
        required = "error" in schema.get("required", [])
        return required and error.get("$ref") == "#/components/schemas/ErrorDetail"

    missing = [
        f"{method} {path} {status}"
        for (method, path), operation in operations(document).items()
        for status, response in operation["responses"].items()
        if status.startswith(("4", "5")) and not has_envelope(response)
    ]
    assert missing == []


async def test_the_served_document_is_the_generated_one(
    app: web.Application, aiohttp_client: MakeClient, document: dict[str, Any]
) -> None:
    client = await aiohttp_client(app)
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == document


def test_the_openapi_command_prints_the_document(
    capsys: pytest.CaptureFixture[str], document: dict[str, Any]
) -> None:
    assert main(["openapi"]) == 0
    assert json.loads(capsys.readouterr().out) == document


def test_the_committed_typescript_types_are_up_to_date(tmp_path: Path) -> None:
    if shutil.which("npx") is None:
        pytest.skip("npx is not on PATH: install Node.js 20+ to check clients/typescript/api.d.ts")
    if not GENERATOR.exists():
        pytest.skip("openapi-typescript is not installed: run scripts/check-types (npm ci) first")
    fresh = tmp_path / "api.d.ts"
    run = subprocess.run(
        [str(ROOT / "scripts" / "generate-types"), str(fresh)],
        check=False,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert fresh.read_text() == TYPES.read_text(), (
        "clients/typescript/api.d.ts is stale: run scripts/generate-types and commit it"
    )


def test_every_error_code_is_named_in_the_document() -> None:
    from dbx_backend.api.errors import ERROR_RESPONSES, INTERNAL

    text = json.dumps(openapi_document())
    # A path's other methods answer 405; OpenAPI lists only the methods a path has.
    codes = {row.code for row in ERROR_RESPONSES.values() if row.status != 405} | {INTERNAL.code}

    assert sorted(code for code in codes if code not in text) == []


def test_every_response_declares_the_headers_it_sends(document: dict[str, Any]) -> None:
    expected = {"401": "WWW-Authenticate", "405": "Allow", "429": "Retry-After"}
    expected["503"] = "Retry-After"
    missing = [
        f"{method} {path} {status}: {header}"
        for (method, path), operation in operations(document).items()
        for status, response in operation["responses"].items()
        for header in ("X-Request-ID", expected.get(status))
        if header is not None and header not in response.get("headers", {})
    ]
    assert missing == []
    for path in ("/api/query", "/api/queries/{name}"):
        responses = document["paths"][path]["post"]["responses"]
        assert {"Server-Timing", "Content-Disposition", "ETag", "Age", "Cache-Control"} <= set(
            responses["200"]["headers"]
        )
        assert {"ETag", "Age", "Cache-Control"} <= set(responses["304"]["headers"])


def test_every_operation_declares_405(document: dict[str, Any]) -> None:
    assert [key for key, op in operations(document).items() if "405" not in op["responses"]] == []


def test_error_codes_are_an_enum_of_the_one_table(document: dict[str, Any]) -> None:
    codes = document["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]

    assert set(codes) == {row.code for row in (*ERROR_RESPONSES.values(), INTERNAL)}


def test_statement_status_is_a_union_discriminated_by_every_state(
    document: dict[str, Any],
) -> None:
    status = document["components"]["schemas"]["StatementStatus"]

    assert status["discriminator"]["propertyName"] == "state"
    assert set(status["discriminator"]["mapping"]) == set(get_args(StatementState))
    assert len(status["oneOf"]) == 4


def test_every_number_in_the_document_is_bounded(document: dict[str, Any]) -> None:
    """Counts, offsets, sizes and options all state their range; only JSON values themselves
    (cells, parameter values) may be any number."""
    unbounded: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number") and not (
                {"minimum", "exclusiveMinimum"} & node.keys() and "maximum" in node
            ):
                unbounded.append(where)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(document, "")
    free = ("/components/schemas/JsonValue/", "/properties/params/", "/properties/value/")
    assert [where for where in unbounded if not any(part in where for part in free)] == []


def test_ndjson_lines_are_named_schemas(document: dict[str, Any]) -> None:
    media = document["paths"]["/api/query"]["post"]["responses"]["200"]["content"]
    lines = media["application/x-ndjson"]["x-item-schema"]["oneOf"]

    assert [line["$ref"].rsplit("/", 1)[1] for line in lines] == [
        "NdjsonHeader",
        "NdjsonRow",
        "NdjsonFooter",
        "ErrorResponse",
    ]
