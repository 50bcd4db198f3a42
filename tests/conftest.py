"""Shared fixtures, one per real part: settings, the fake clock, aioresponses (wired for
aiohttp 3.14), local warehouses on loopback, and the service with its test client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core

from dbx_backend.app import create_app
from dbx_backend.config import Settings, load_settings
from dbx_backend.localwarehouse import LocalWarehouse, WarehouseConfig
from dbx_backend.warehouse.retry import NO_WAIT
from tests.redisserver import RedisServer

TEST_TOKEN = "dapi-test-secret-token-0123456789"
TEST_HOST = "https://example.cloud.databricks.com"
TEST_ENV = {
    "DATABRICKS_HOST": TEST_HOST,
    "DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/wh123",
    "DATABRICKS_TOKEN": TEST_TOKEN,
}

# A local warehouse for the service's tests: no sample tables, `wait_timeout` shrunk 50-fold.
LOCAL_WAREHOUSE = WarehouseConfig(
    token="dapi-local-warehouse-0123456789", seed_samples=False, wait_timeout_scale=0.02
)

Client = TestClient[web.Request, web.Application]
StartLocalWarehouse = Callable[..., Awaitable[LocalWarehouse]]
StartService = Callable[..., Awaitable[Client]]


class _NoStreamWriter:
    output_size = 0


class _ShimmedClientResponse(ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's `stream_writer` argument
    (aioresponses issue #289, fix pending in PR #292). Supply an inert one. Remove this shim
    once an aioresponses release passes it itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _NoStreamWriter())
        super().__init__(*args, **kwargs)


@pytest.fixture
def settings() -> Settings:
    return load_settings(TEST_ENV, env_file=None)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses that lets loopback through (the aiohttp test server and local warehouse)."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _ShimmedClientResponse)
    with aioresponses(passthrough=["http://127.0.0.1", "http://localhost"]) as mock:
        yield mock


# Where wall clocks start in tests (a plausible epoch time); monotonic clocks start at 1000.
WALL_CLOCK_START = 1_700_000_000.0


class FakeClock:
    """The one fake clock: it moves only when a test moves it (`advance`) or when the code
    under test sleeps (`sleep`, which records each delay), so no test waits for real time."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # a sleep still lets other tasks run, as a real one does


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


_LOOPBACK = {"127.0.0.1", "localhost", "::1", None}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never resolve (so never reach) a host other than loopback."""
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in _LOOPBACK:
            raise OSError(f"tests may only reach loopback, not {name!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server of this test's own on a free loopback port (never skipped)."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with server:
        yield server


@pytest.fixture
async def local_warehouse() -> AsyncIterator[StartLocalWarehouse]:
    """Start local warehouses on loopback: `config` (LOCAL_WAREHOUSE by default) with fields
    overridden, `clock=` a fake clock. Every one started is stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            config: WarehouseConfig = LOCAL_WAREHOUSE,
            *,
            clock: Callable[[], float] | None = None,
            **overrides: Any,
        ) -> LocalWarehouse:
            kwargs = {} if clock is None else {"clock": clock}
            warehouse = LocalWarehouse(replace(config, **overrides), **kwargs)
            return await stack.enter_async_context(warehouse)

        yield start


def warehouse_settings(warehouse: LocalWarehouse, **env: str) -> Settings:
    """The service's settings for `warehouse` (its URL, warehouse and token), plus `env`."""
    return load_settings(
        {
            "DATABRICKS_HOST": warehouse.url,
            "DATABRICKS_HTTP_PATH": warehouse.http_path,
            "DATABRICKS_TOKEN": warehouse.config.token,
            **env,
        },
        env_file=None,
    )


@pytest.fixture
def start_service(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> StartService:
    """`create_app(settings, **kwargs)` served on loopback, and its test client; retries never
    wait unless the test passes its own `retry_policy`."""

    async def start(settings: Settings, **kwargs: Any) -> Client:
        kwargs.setdefault("retry_policy", NO_WAIT)
        return await aiohttp_client(create_app(settings, **kwargs))

    return start
