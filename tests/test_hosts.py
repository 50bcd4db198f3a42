"""The DNS rebinding guard: bound to loopback, only loopback `Host` names are answered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.app import create_app
from dbx_backend.config import ConfigError, load_settings
from dbx_backend.hosts import HostAllowlist, allowlist_for, host_name
from tests.conftest import TEST_ENV, StartLocalWarehouse

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.mark.parametrize(
    ("header", "name"),
    [
        pytest.param("localhost:4000", "localhost", id="name-port"),
        pytest.param("LOCALHOST", "localhost", id="upper-case"),
        pytest.param("127.0.0.1", "127.0.0.1", id="ipv4"),
        pytest.param("[::1]:4000", "::1", id="ipv6-port"),
        pytest.param("[::1]", "::1", id="ipv6"),
        pytest.param("evil.example:80", "evil.example", id="foreign"),
        pytest.param("localhost:abc", None, id="bad-port"),
        pytest.param("[::1", None, id="open-bracket"),
        pytest.param("[::1]x", None, id="junk-after-bracket"),
        pytest.param(":4000", None, id="no-name"),
    ],
)
def test_host_name_is_the_header_without_port(header: str, name: str | None) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        pytest.param("localhost:4000", True, id="localhost"),
        pytest.param("127.0.0.1:4000", True, id="127.0.0.1"),
        pytest.param("127.9.9.9", True, id="127-slash-8"),
        pytest.param("[::1]:4000", True, id="ipv6-loopback"),
        pytest.param("app.internal", True, id="allowed-name"),
        pytest.param("x.corp.example", True, id="allowed-suffix"),
        pytest.param("corp.example", False, id="suffix-is-not-the-domain"),
        pytest.param("attacker.example", False, id="rebinding-name"),
        pytest.param("localhost.attacker.example", False, id="localhost-prefix"),
        pytest.param("127.0.0.1.attacker.example", False, id="ip-prefix"),
        pytest.param("10.0.0.5", False, id="private-address"),
        pytest.param(None, False, id="no-host-header"),
        pytest.param("", False, id="empty"),
    ],
)
def test_the_allowlist_takes_loopback_and_allowed_names_only(
    header: str | None, allowed: bool
) -> None:
    allowlist = HostAllowlist(["app.internal", ".corp.example"])

    assert allowlist.allows(header) is allowed


def test_bound_beyond_loopback_without_allowed_hosts_any_host_is_answered() -> None:
    assert allowlist_for("0.0.0.0", ()) is None
    assert allowlist_for("127.0.0.1", ()) is not None
    assert allowlist_for("0.0.0.0", ("api.example.com",)) is not None


def test_a_star_allows_every_host() -> None:
    assert HostAllowlist(["*"]).allows("anything.example")


@pytest.mark.parametrize(
    "value", ["https://app.example", "app.example/path", "app.example:8080", "a b"]
)
def test_allowed_hosts_must_be_host_names(value: str) -> None:
    with pytest.raises(ConfigError, match="ALLOWED_HOSTS"):
        load_settings({**TEST_ENV, "ALLOWED_HOSTS": value}, env_file=None)


async def service(aiohttp_client: MakeClient, **env: str) -> Client:
    settings = load_settings({**TEST_ENV, **env}, env_file=None)
    return await aiohttp_client(create_app(settings))


@pytest.mark.parametrize("host", ["localhost:4000", "127.0.0.1", "[::1]:4000"])
async def test_bound_to_loopback_the_service_answers_loopback_names(
    aiohttp_client: MakeClient, host: str
) -> None:
    client = await service(aiohttp_client, HOST="127.0.0.1")

    response = await client.get("/health", headers={"Host": host})

    assert response.status == 200


@pytest.mark.parametrize("path", ["/health", "/api/query", "/openapi.json", "/metrics"])
async def test_bound_to_loopback_a_foreign_host_gets_421_in_the_envelope(
    aiohttp_client: MakeClient, path: str
) -> None:
    client = await service(aiohttp_client, HOST="127.0.0.1")

    response = await client.get(path, headers={"Host": "attacker.example:4000"})

    assert response.status == 421
    error = (await response.json())["error"]
    assert error["code"] == "HOST_NOT_ALLOWED"
    assert "ALLOWED_HOSTS" in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]


async def test_allowed_hosts_extend_the_loopback_names(aiohttp_client: MakeClient) -> None:
    client = await service(aiohttp_client, HOST="127.0.0.1", ALLOWED_HOSTS="dev.test")

    allowed = await client.get("/health", headers={"Host": "dev.test:4000"})
    refused = await client.get("/health", headers={"Host": "other.test:4000"})

    assert (allowed.status, refused.status) == (200, 421)


async def test_bound_beyond_loopback_any_host_is_answered_by_default(
    aiohttp_client: MakeClient,
) -> None:
    client = await service(aiohttp_client, HOST="0.0.0.0")

    response = await client.get("/health", headers={"Host": "api.example.com"})

    assert response.status == 200


async def test_the_local_warehouse_refuses_a_foreign_host(
    local_warehouse: StartLocalWarehouse,
) -> None:
    warehouse = await local_warehouse(token="t", wait_timeout_scale=1.0)
    async with aiohttp.ClientSession() as session:
        auth = {"Authorization": "Bearer t"}
        url = f"{warehouse.url}/api/2.0/sql/statements/none"
        async with session.get(url, headers={**auth, "Host": "attacker.example"}) as foreign:
            foreign_body = await foreign.json()
        async with session.get(url, headers={**auth, "Host": "localhost"}) as local:
            local_status = local.status

    assert foreign.status == 421
    assert foreign_body["error_code"] == "BAD_REQUEST"
    assert local_status == 404  # through the guard; the statement does not exist
