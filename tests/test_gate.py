"""One gate: no route reaches the warehouse with a statement the gate did not let through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler
from aioresponses import aioresponses
from yarl import URL

from dbx_backend.app import create_app
from dbx_backend.config import Settings, load_settings
from dbx_backend.engine import AdhocSqlDisabled, Admitted, QueryService
from dbx_backend.engine.gate import PROBE
from dbx_backend.keys import QUERY_SERVICE
from dbx_backend.warehouse.client import WarehouseClient
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
WRITE = "DELETE FROM samples.nyctaxi.trips"
NAMED_QUERIES = {
    "one": "-- description: one row\nSELECT 1 AS n\n",
    "wipe": f"-- description: a write, which READ_ONLY refuses\n{WRITE}\n",
}
# Every route that sends a statement: (path to request, body) to send a write, and to send a
# read. A named query sends its own SQL.
SUBMITTING_ROUTES = {
    ("POST", "/api/query"): (("/api/query", {"sql": WRITE}), ("/api/query", {"sql": "SELECT 1"})),
    ("POST", "/api/statements"): (
        ("/api/statements", {"sql": WRITE}),
        ("/api/statements", {"sql": "SELECT 1"}),
    ),
    ("POST", "/api/queries/{name}"): (("/api/queries/wipe", {}), ("/api/queries/one", {})),
}
ROUTE_IDS = [f"{method} {path}" for method, path in sorted(SUBMITTING_ROUTES)]


def posted(mocked: aioresponses) -> list[Any]:
    return list(mocked.requests.get(("POST", URL(STATEMENTS)), []))


async def service(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    *,
    extra: dict[str, Handler] | None = None,
    **env: str,
) -> Client:
    """The service with the named queries above, and `extra` routes a test adds (POST)."""
    for name, sql in NAMED_QUERIES.items():
        (tmp_path / f"{name}.sql").write_text(sql)
    settings = load_settings({**TEST_ENV, "QUERIES_DIR": str(tmp_path), **env}, env_file=None)
    app = create_app(settings, retry_policy=NO_WAIT)
    for path, handler in (extra or {}).items():
        app.router.add_post(path, handler)
    return await aiohttp_client(app)


def submitting_routes(app: web.Application) -> set[tuple[str, str]]:
    """Routes that can submit: POSTs under /api (reads of handles and lists cannot)."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method == "POST"
        and route.resource.canonical.startswith("/api/")
    }


async def test_every_submitting_route_is_known_to_this_test(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await service(aiohttp_client, tmp_path)

    assert submitting_routes(client.app) == set(SUBMITTING_ROUTES)


async def test_a_route_a_test_adds_is_seen_as_submitting(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """The route listing above would notice a new route, so this test file must learn it."""

    async def new_route(request: web.Request) -> web.Response:
        return web.json_response({})

    client = await service(aiohttp_client, tmp_path, extra={"/api/new": new_route})

    assert submitting_routes(client.app) - set(SUBMITTING_ROUTES) == {("POST", "/api/new")}


@pytest.mark.parametrize("route", sorted(SUBMITTING_ROUTES), ids=ROUTE_IDS)
async def test_a_write_is_refused_on_every_route_before_the_warehouse(
    aiohttp_client: MakeClient, mocked: aioresponses, tmp_path: Path, route: tuple[str, str]
) -> None:
    client = await service(aiohttp_client, tmp_path)
    mocked.post(STATEMENTS, payload=ONE_ROW, repeat=True)
    (path, body), _ = SUBMITTING_ROUTES[route]

    response = await client.request(route[0], path, json=body)

    assert response.status == 403
    assert (await response.json())["error"]["code"] == "STATEMENT_NOT_ALLOWED"
    assert posted(mocked) == []


@pytest.mark.parametrize("route", sorted(SUBMITTING_ROUTES), ids=ROUTE_IDS)
async def test_with_adhoc_sql_off_only_named_queries_reach_the_warehouse(
    aiohttp_client: MakeClient, mocked: aioresponses, tmp_path: Path, route: tuple[str, str]
) -> None:
    client = await service(aiohttp_client, tmp_path, ALLOW_ADHOC_SQL="false")
    mocked.post(STATEMENTS, payload=ONE_ROW, repeat=True)
    _, (path, body) = SUBMITTING_ROUTES[route]

    response = await client.request(route[0], path, json=body)

    if route[1] == "/api/queries/{name}":
        assert response.status == 200
        assert len(posted(mocked)) == 1
    else:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "ADHOC_SQL_DISABLED"
        assert posted(mocked) == []


async def test_a_route_that_skips_the_gate_with_a_string_is_gated_by_the_engine(
    aiohttp_client: MakeClient, mocked: aioresponses, tmp_path: Path
) -> None:
    async def sneaky(request: web.Request) -> web.Response:
        await request.app[QUERY_SERVICE].execute_query(WRITE)
        return web.json_response({})

    client = await service(aiohttp_client, tmp_path, extra={"/sneaky": sneaky})
    mocked.post(STATEMENTS, payload=ONE_ROW, repeat=True)

    response = await client.post("/sneaky")

    assert response.status == 403
    assert posted(mocked) == []


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda real: Admitted(WRITE, "named", seal=b"\0" * 32), id="made-up"),
        pytest.param(lambda real: replace(real, sql=WRITE), id="sql-swapped"),
        pytest.param(lambda real: replace(real, source="probe"), id="source-swapped"),
    ],
)
async def test_a_route_that_forges_an_admission_reaches_nothing(
    aiohttp_client: MakeClient,
    mocked: aioresponses,
    tmp_path: Path,
    forge: Callable[[Admitted], Admitted],
) -> None:
    async def forger(request: web.Request) -> web.Response:
        engine = request.app[QUERY_SERVICE]
        await engine.execute_query(forge(await engine.admit("SELECT 1")))
        return web.json_response({})

    client = await service(
        aiohttp_client, tmp_path, extra={"/forger": forger}, ALLOW_ADHOC_SQL="true"
    )
    mocked.post(STATEMENTS, payload=ONE_ROW, repeat=True)

    response = await client.post("/forger")

    assert response.status == 500
    assert posted(mocked) == []


async def test_no_application_key_holds_the_transport(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """A handler finds the engine in the app, never a client it could submit through."""
    client = await service(aiohttp_client, tmp_path)

    held = [type(value).__name__ for value in client.app.values()]

    assert "WarehouseClient" not in held
    assert isinstance(client.app[QUERY_SERVICE], QueryService)


async def test_the_readiness_probe_runs_with_adhoc_sql_off(
    settings: Settings, mocked: aioresponses
) -> None:
    off = settings.model_copy(update={"allow_adhoc_sql": False})
    mocked.post(STATEMENTS, payload=ONE_ROW, repeat=True)

    async with WarehouseClient(off, policy=NO_WAIT) as transport:
        engine = QueryService(transport)
        result = await engine.execute_query(PROBE)
        with pytest.raises(AdhocSqlDisabled):
            await engine.execute_query("SELECT 1")

    assert result.rows == [[1]]
    assert len(posted(mocked)) == 1
