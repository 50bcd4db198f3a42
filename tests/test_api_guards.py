"""What a request must pass: API keys, read-only policy, ad-hoc switch, limits, named queries."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aioresponses import aioresponses
from yarl import URL

from dbx_backend.app import create_app
from dbx_backend.config import Settings, load_settings
from dbx_backend.queries import QueryFileError
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import TEST_ENV, TEST_HOST

STATEMENTS = f"{TEST_HOST}/api/2.0/sql/statements"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
ONE_ROW = {
    "statement_id": "s1",
    "status": {"state": "SUCCEEDED"},
    "manifest": {
        "schema": {"columns": [{"name": "n", "type_name": "INT", "type_text": "INT"}]},
        "total_row_count": 1,
    },
    "result": {"data_array": [["1"]]},
}
TRIPS_SQL = """-- description: Trips from one zip
-- param: zip INT required
-- param: limit INT default 10
SELECT * FROM samples.nyctaxi.trips WHERE pickup_zip = :zip LIMIT :limit
"""


def settings_with(**env: str) -> Settings:
    return load_settings({**TEST_ENV, **env}, env_file=None)


async def make(aiohttp_client: MakeClient, **env: str) -> Client:
    return await aiohttp_client(create_app(settings_with(**env), retry_policy=NO_WAIT))


def posted(mocked: aioresponses) -> list[Any]:
    return list(mocked.requests.get(("POST", URL(STATEMENTS)), []))


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="no-key"),
        pytest.param({"Authorization": "Bearer wrong"}, 401, id="wrong-key"),
        pytest.param({"Authorization": "Basic key-two"}, 401, id="wrong-scheme"),
        pytest.param({"X-API-Key": "key-two"}, 401, id="wrong-header"),
        pytest.param({"Authorization": "Bearer key-two"}, 200, id="right-key"),
    ],
)
async def test_api_keys_guard_the_api(
    aiohttp_client: MakeClient, mocked: aioresponses, headers: dict[str, str], status: int
) -> None:
    client = await make(aiohttp_client, API_KEYS="key-one,key-two")
    mocked.post(STATEMENTS, payload=ONE_ROW)

    response = await client.post("/api/query", json={"sql": "SELECT 1"}, headers=headers)

    assert response.status == status
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["error"]["code"] == "UNAUTHORIZED"
        assert posted(mocked) == []


async def test_keys_can_come_from_a_file(
    aiohttp_client: MakeClient, mocked: aioresponses, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# the web app\nfile-key\n")
    client = await make(aiohttp_client, API_KEYS_FILE=str(keys))
    mocked.post(STATEMENTS, payload=ONE_ROW)

    ok = await client.post(
        "/api/query", json={"sql": "SELECT 1"}, headers={"Authorization": "Bearer file-key"}
    )
    refused = await client.post(
        "/api/query", json={"sql": "SELECT 1"}, headers={"Authorization": "Bearer # the web app"}
    )

    assert ok.status == 200
    assert refused.status == 401


async def test_health_stays_open_with_keys(aiohttp_client: MakeClient) -> None:
    client = await make(aiohttp_client, API_KEYS="k")

    response = await client.get("/health")

    assert response.status == 200


async def test_keys_are_compared_in_constant_time_against_every_key(
    aiohttp_client: MakeClient, mocked: aioresponses, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)
    client = await make(aiohttp_client, API_KEYS="k1,k2,k3")
    mocked.post(STATEMENTS, payload=ONE_ROW)

    response = await client.post(
        "/api/query", json={"sql": "SELECT 1"}, headers={"Authorization": "Bearer k1"}
    )

    assert response.status == 200
    assert compared == [(b"k1", b"k1"), (b"k1", b"k2"), (b"k1", b"k3")]


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        pytest.param("DROP TABLE samples.nyctaxi.trips", "DROP", id="drop"),
        pytest.param("INSERT INTO t VALUES (1)", "INSERT", id="insert"),
        pytest.param("SELECT 1; DELETE FROM t", "MULTIPLE", id="two-statements"),
    ],
)
async def test_writes_are_refused_before_the_warehouse_sees_them(
    aiohttp_client: MakeClient, mocked: aioresponses, sql: str, kind: str
) -> None:
    client = await make(aiohttp_client)

    response = await client.post("/api/query", json={"sql": sql})
    body = await response.json()

    assert response.status == 403
    assert body["error"]["code"] == "STATEMENT_NOT_ALLOWED"
    assert kind in body["error"]["message"]
    assert posted(mocked) == []


async def test_unparsable_sql_is_a_400_pointing_at_the_spot(
    aiohttp_client: MakeClient, mocked: aioresponses
) -> None:
    client = await make(aiohttp_client)

    response = await client.post("/api/query", json={"sql": "SELECT * FROM (SELECT"})
    body = await response.json()

    assert response.status == 400
    assert body["error"]["code"] == "SQL_PARSE_ERROR"
    assert "line 1" in body["error"]["message"]
    assert posted(mocked) == []


async def test_read_only_off_lets_writes_through(
    aiohttp_client: MakeClient, mocked: aioresponses
) -> None:
    client = await make(aiohttp_client, READ_ONLY="false")
    mocked.post(STATEMENTS, payload=ONE_ROW)

    response = await client.post("/api/query", json={"sql": "INSERT INTO t VALUES (1)"})

    assert response.status == 200
    assert len(posted(mocked)) == 1


@pytest.mark.parametrize("path", ["/api/query", "/api/queries/trips"])
async def test_a_body_over_max_body_bytes_sent_at_once_gets_413(
    aiohttp_client: MakeClient, mocked: aioresponses, tmp_path: Path, path: str
) -> None:
    (tmp_path / "trips.sql").write_text(TRIPS_SQL)
    client = await make(aiohttp_client, MAX_BODY_BYTES="1024", QUERIES_DIR=str(tmp_path))
    body = b'{"sql": "SELECT \'' + b"x" * 2000 + b"'\"}"  # one small write: all there at once

    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})

    assert response.status == 413
    assert (await response.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert posted(mocked) == []


async def test_oversized_sql_is_refused(aiohttp_client: MakeClient, mocked: aioresponses) -> None:
    client = await make(aiohttp_client, MAX_SQL_BYTES="100")

    response = await client.post("/api/query", json={"sql": "SELECT '" + "x" * 200 + "'"})

    assert response.status == 413
    assert (await response.json())["error"]["code"] == "SQL_TOO_LARGE"
    assert posted(mocked) == []


async def test_over_the_concurrency_limit_gets_429_while_earlier_queries_complete(
    aiohttp_client: MakeClient, mocked: aioresponses
) -> None:
    client = await make(aiohttp_client, MAX_CONCURRENT_QUERIES="1")
    release = asyncio.Event()

    async def slow_answer(url: URL, **kwargs: Any) -> Any:
        await release.wait()
        from aioresponses import CallbackResult

        return CallbackResult(payload=ONE_ROW)

    mocked.post(STATEMENTS, callback=slow_answer)
    first = asyncio.create_task(client.post("/api/query", json={"sql": "SELECT 1"}))
    for _ in range(200):
        if posted(mocked):
            break
        await asyncio.sleep(0.005)

    second = await client.post("/api/query", json={"sql": "SELECT 2"})
    release.set()
    first_response = await asyncio.wait_for(first, 5)

    assert second.status == 429
    assert second.headers["Retry-After"] == "1"
    assert (await second.json())["error"]["code"] == "TOO_MANY_QUERIES"
    assert (await second.json())["error"]["retryable"] is True
    assert first_response.status == 200


@pytest.fixture
def queries_dir(tmp_path: Path) -> Path:
    (tmp_path / "trips_by_zip.sql").write_text(TRIPS_SQL)
    return tmp_path


async def test_named_queries_are_listed_with_their_parameters(
    aiohttp_client: MakeClient, queries_dir: Path
) -> None:
    client = await make(aiohttp_client, QUERIES_DIR=str(queries_dir))

    body = await (await client.get("/api/queries")).json()

    (query,) = body["queries"]
    assert query["name"] == "trips_by_zip"
    assert [(p["name"], p["type"], p["required"], p["default"]) for p in query["params"]] == [
        ("zip", "INT", True, None),
        ("limit", "INT", False, "10"),
    ]


async def test_a_named_query_runs_with_bound_parameters_and_defaults(
    aiohttp_client: MakeClient, mocked: aioresponses, queries_dir: Path
) -> None:
    client = await make(aiohttp_client, QUERIES_DIR=str(queries_dir))
    mocked.post(STATEMENTS, payload=ONE_ROW)

    response = await client.post("/api/queries/trips_by_zip", json={"params": {"zip": 10001}})

    assert response.status == 200
    sent = posted(mocked)[0].kwargs["json"]
    assert sent["statement"].strip() == (
        "SELECT * FROM samples.nyctaxi.trips WHERE pickup_zip = :zip LIMIT :limit"
    )
    assert sent["parameters"] == [
        {"name": "zip", "value": "10001", "type": "INT"},
        {"name": "limit", "value": "10", "type": "INT"},
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({}, "params.zip", id="missing-required"),
        pytest.param({"zip": "abc"}, "params.zip", id="wrong-type"),
        pytest.param({"zip": 1, "color": "red"}, "params.color", id="unknown"),
    ],
)
async def test_named_query_params_are_validated(
    aiohttp_client: MakeClient,
    mocked: aioresponses,
    queries_dir: Path,
    params: dict[str, Any],
    field: str,
) -> None:
    client = await make(aiohttp_client, QUERIES_DIR=str(queries_dir))

    response = await client.post("/api/queries/trips_by_zip", json={"params": params})
    body = await response.json()

    assert response.status == 400
    assert body["error"]["code"] == "INVALID_PARAMS"
    assert body["error"]["field"] == field
    assert posted(mocked) == []


async def test_a_missing_named_query_is_404(aiohttp_client: MakeClient, queries_dir: Path) -> None:
    client = await make(aiohttp_client, QUERIES_DIR=str(queries_dir))

    response = await client.post("/api/queries/nope", json={})

    assert response.status == 404


async def test_adhoc_sql_can_be_turned_off_leaving_named_queries(
    aiohttp_client: MakeClient, mocked: aioresponses, queries_dir: Path
) -> None:
    client = await make(aiohttp_client, QUERIES_DIR=str(queries_dir), ALLOW_ADHOC_SQL="false")
    mocked.post(STATEMENTS, payload=ONE_ROW)

    adhoc = await client.post("/api/query", json={"sql": "SELECT 1"})
    named = await client.post("/api/queries/trips_by_zip", json={"params": {"zip": 1}})

    assert adhoc.status == 403
    assert (await adhoc.json())["error"]["code"] == "ADHOC_SQL_DISABLED"
    assert named.status == 200


def test_a_malformed_query_file_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "bad.sql").write_text("-- param: x NOTATYPE required\nSELECT :x\n")

    with pytest.raises(QueryFileError, match=r"bad\.sql"):
        create_app(settings_with(QUERIES_DIR=str(tmp_path)))
