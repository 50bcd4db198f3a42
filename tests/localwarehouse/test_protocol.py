"""Endpoints, authentication and request validation of the local warehouse (reference §1-4)."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import orjson
import pytest

from tests.localwarehouse.conftest import STATEMENTS, TOKEN, Api


@pytest.mark.parametrize("path", [STATEMENTS, STATEMENTS + "/"], ids=["no-slash", "slash"])
async def test_execute_accepts_the_path_with_and_without_trailing_slash(
    api: Api, path: str
) -> None:
    status, body = await api.request(
        "POST", path, json={"warehouse_id": "local", "statement": "SELECT 1 AS one"}
    )

    assert status == 200
    assert body["status"]["state"] == "SUCCEEDED"
    assert body["result"]["data_array"] == [["1"]]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({}, "Credential was not sent", id="no-header"),
        pytest.param({"Authorization": "Bearer wrong"}, "Invalid access token", id="wrong-token"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, "Credential was not", id="not-bearer"),
    ],
)
async def test_requests_without_a_valid_bearer_token_are_401(
    api: Api, headers: dict[str, str], message: str
) -> None:
    async with aiohttp.ClientSession(api.warehouse.url) as bare:
        response = await bare.post(
            STATEMENTS, json={"warehouse_id": "local", "statement": "SELECT 1"}, headers=headers
        )
        body = await response.json()

    assert response.status == 401
    assert body["error_code"] == "UNAUTHENTICATED"
    assert message in body["message"]
    assert api.warehouse.active_statements() == 0


async def test_unknown_warehouse_is_404_resource_does_not_exist(api: Api) -> None:
    status, body = await api.request(
        "POST", STATEMENTS, json={"warehouse_id": "nope", "statement": "SELECT 1"}
    )

    assert status == 404
    assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"


async def test_workspace_id_header_is_ignored(api: Api) -> None:
    status, body = await api.request(
        "POST",
        STATEMENTS,
        json={"warehouse_id": "local", "statement": "SELECT 1"},
        headers={"X-Databricks-Workspace-Id": "123"},
    )

    assert (status, body["status"]["state"]) == (200, "SUCCEEDED")


_VALID = {"warehouse_id": "local", "statement": "SELECT 1"}


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        pytest.param({"statement": None}, "statement", id="missing-statement"),
        pytest.param({"statement": ""}, "statement", id="empty-statement"),
        pytest.param({"statement": 7}, "statement", id="statement-not-string"),
        pytest.param({"warehouse_id": None}, "warehouse_id", id="missing-warehouse"),
        pytest.param({"wait_timeout": "60s"}, "wait_timeout", id="wait-over-50s"),
        pytest.param({"wait_timeout": "3s"}, "wait_timeout", id="wait-under-5s"),
        pytest.param({"wait_timeout": "10"}, "wait_timeout", id="wait-without-unit"),
        pytest.param({"wait_timeout": 10}, "wait_timeout", id="wait-as-number"),
        pytest.param({"on_wait_timeout": "STOP"}, "on_wait_timeout", id="bad-on-wait"),
        pytest.param({"disposition": "FILE"}, "disposition", id="bad-disposition"),
        pytest.param({"format": "XML"}, "format", id="bad-format"),
        pytest.param({"format": "CSV"}, "INLINE", id="inline-csv"),
        pytest.param({"format": "ARROW_STREAM"}, "INLINE", id="inline-arrow"),
        pytest.param({"row_limit": -1}, "row_limit", id="negative-row-limit"),
        pytest.param({"row_limit": True}, "row_limit", id="boolean-row-limit"),
        pytest.param({"byte_limit": "lots"}, "byte_limit", id="byte-limit-not-int"),
        pytest.param({"catalog": ""}, "catalog", id="empty-catalog"),
        pytest.param({"schema": 5}, "schema", id="schema-not-string"),
        pytest.param({"parameters": {"a": "1"}}, "parameters", id="parameters-not-list"),
        pytest.param({"parameters": [{"name": "1a"}]}, "name", id="parameter-bad-name"),
        pytest.param({"parameters": [{"name": "a"}, {"name": "a"}]}, "more than once", id="dup"),
        pytest.param({"parameters": [{"name": "a", "value": 5}]}, "value", id="value-not-str"),
        pytest.param(
            {"parameters": [{"name": "a", "value": "1", "type": "ARRAY<INT>"}]},
            "type",
            id="complex-parameter-type",
        ),
        pytest.param(
            {"parameters": [{"name": "a", "value": "1", "type": "INT; DROP TABLE t"}]},
            "type",
            id="parameter-type-with-sql",
        ),
        pytest.param({"query_tags": [{"value": "x"}]}, "query_tags", id="tag-without-key"),
    ],
)
async def test_malformed_fields_are_400_invalid_parameter_value(
    api: Api, fields: dict[str, Any], names: str
) -> None:
    body = {k: v for k, v in {**_VALID, **fields}.items() if v is not None}

    status, answer = await api.request("POST", STATEMENTS, json=body)

    assert status == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert names in answer["message"]
    assert api.warehouse.active_statements() == 0


async def test_a_body_that_is_not_json_is_400_malformed_request(api: Api) -> None:
    status, answer = await api.request(
        "POST", STATEMENTS, data=b"{nope", headers={"Content-Type": "application/json"}
    )

    assert (status, answer["error_code"]) == (400, "MALFORMED_REQUEST")


async def test_a_statement_over_16_mib_is_refused(api: Api) -> None:
    huge = "SELECT '" + "x" * (16 * 1024 * 1024) + "'"
    body = io.BytesIO(orjson.dumps({**_VALID, "statement": huge}))

    status, answer = await api.request(
        "POST", STATEMENTS, data=body, headers={"Content-Type": "application/json"}
    )

    assert (status, answer["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", f"{STATEMENTS}/unknown", id="get"),
        pytest.param("GET", f"{STATEMENTS}/unknown/result/chunks/0", id="chunk"),
        pytest.param("POST", f"{STATEMENTS}/unknown/cancel", id="cancel"),
    ],
)
async def test_a_statement_id_never_issued_is_404(api: Api, method: str, path: str) -> None:
    status, answer = await api.request(method, path)

    assert status == 404
    assert answer["error_code"] == "NOT_FOUND"
    assert answer["details"][0]["request_id"]


async def test_an_unknown_route_is_404_endpoint_not_found(api: Api) -> None:
    status, answer = await api.request("GET", "/api/2.0/sql/dashboards")

    assert (status, answer["error_code"]) == (404, "ENDPOINT_NOT_FOUND")


async def test_every_request_is_recorded_without_its_credentials(api: Api) -> None:
    await api.execute("SELECT 1", query_tags=[{"key": "request_id", "value": "r-1"}])

    seen = api.warehouse.requests[-1]

    assert (seen.method, seen.path, seen.endpoint, seen.authorized) == (
        "POST",
        STATEMENTS,
        "execute",
        True,
    )
    assert seen.json["query_tags"] == [{"key": "request_id", "value": "r-1"}]
    assert TOKEN not in repr(seen)
