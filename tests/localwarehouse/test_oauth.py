"""OAuth M2M: discovery and the client-credentials grant of the workspace (reference §10.2)."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from tests.conftest import FakeClock
from tests.localwarehouse.conftest import STATEMENTS, Api, StartWarehouse

CLIENTS = {"svc-app": "s3cret-value"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def oauth(start_warehouse: StartWarehouse, clock: FakeClock) -> Api:
    return await start_warehouse(clock=clock, oauth_clients=CLIENTS, oauth_token_ttl_s=3600)


async def fetch_token(api: Api, **kwargs: object) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(api.warehouse.url) as bare:
        response = await bare.post("/oidc/v1/token", **kwargs)  # type: ignore[arg-type]
        return response.status, await response.json()


async def run_with(api: Api, access_token: str) -> int:
    async with aiohttp.ClientSession(api.warehouse.url) as bare:
        response = await bare.post(
            STATEMENTS,
            json={"warehouse_id": "local", "statement": "SELECT 1"},
            headers={"Authorization": f"Bearer {access_token}"},
        )
        return response.status


async def test_discovery_names_the_token_endpoint(oauth: Api) -> None:
    status, body = await oauth.request("GET", "/oidc/.well-known/oauth-authorization-server")

    assert status == 200
    assert body["token_endpoint"] == f"{oauth.warehouse.url}/oidc/v1/token"


async def test_client_credentials_give_a_token_the_statement_api_accepts(oauth: Api) -> None:
    status, token = await fetch_token(
        oauth,
        data={"grant_type": "client_credentials", "scope": "all-apis"},
        headers=basic("svc-app", "s3cret-value"),
    )

    assert status == 200
    assert (token["token_type"], token["expires_in"], token["scope"]) == (
        "Bearer",
        3600,
        "all-apis",
    )
    assert await run_with(oauth, token["access_token"]) == 200


async def test_credentials_in_the_form_body_are_accepted_too(oauth: Api) -> None:
    status, token = await fetch_token(
        oauth,
        data={
            "grant_type": "client_credentials",
            "client_id": "svc-app",
            "client_secret": "s3cret-value",
        },
    )

    assert status == 200
    assert token["scope"] == "all-apis"


@pytest.mark.parametrize(
    ("data", "headers", "status", "error"),
    [
        pytest.param(
            {"grant_type": "client_credentials"},
            basic("svc-app", "wrong"),
            401,
            "invalid_client",
            id="wrong-secret",
        ),
        pytest.param(
            {"grant_type": "client_credentials"},
            basic("nobody", "x"),
            401,
            "invalid_client",
            id="unknown-client",
        ),
        pytest.param({"grant_type": "client_credentials"}, {}, 401, "invalid_client", id="none"),
        pytest.param(
            {"grant_type": "password"},
            basic("svc-app", "s3cret-value"),
            400,
            "unsupported_grant_type",
            id="wrong-grant",
        ),
    ],
)
async def test_bad_token_requests_get_oauth_errors(
    oauth: Api, data: dict[str, str], headers: dict[str, str], status: int, error: str
) -> None:
    answer_status, body = await fetch_token(oauth, data=data, headers=headers)

    assert (answer_status, body["error"]) == (status, error)
    assert "s3cret-value" not in str(body)


async def test_an_issued_token_stops_working_when_it_expires(oauth: Api, clock: FakeClock) -> None:
    _, token = await fetch_token(
        oauth, data={"grant_type": "client_credentials"}, headers=basic("svc-app", "s3cret-value")
    )

    clock.advance(3600)

    assert await run_with(oauth, token["access_token"]) == 401
