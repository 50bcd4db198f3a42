"""Fixtures: a local warehouse on a loopback port, a plain aiohttp client for it, a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from dbx_backend.localwarehouse import LocalWarehouse, WarehouseConfig
from tests.conftest import WALL_CLOCK_START, FakeClock, StartLocalWarehouse

TOKEN = "dapi-local-test"
STATEMENTS = "/api/2.0/sql/statements"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"}
# Small and fast by default: no samples, tiny chunks, `wait_timeout` shrunk 20-fold.
BASE_CONFIG = WarehouseConfig(
    token=TOKEN, seed_samples=False, chunk_rows=1000, wait_timeout_scale=0.05
)


@dataclass
class Api:
    """A plain aiohttp client of the Statement Execution API, as a third party would write it."""

    session: aiohttp.ClientSession
    warehouse: LocalWarehouse

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, path, **kwargs) as response:
            text = await response.text()
            try:
                return response.status, await response.json(content_type=None)
            except ValueError:
                return response.status, text

    async def execute(self, statement: str, **fields: Any) -> dict[str, Any]:
        """POST a statement. Unless the test chooses `wait_timeout` itself (to see PENDING or
        RUNNING), poll to a terminal state: on a loaded machine the shrunk default wait may
        end before the statement does, and such tests are about the result."""
        body = {"warehouse_id": self.warehouse.config.warehouse_id, "statement": statement}
        status, answer = await self.request("POST", STATEMENTS, json={**body, **fields})
        assert status == 200, answer
        assert isinstance(answer, dict)
        if "wait_timeout" not in fields and answer["status"]["state"] in ("PENDING", "RUNNING"):
            return await self.wait_for(answer["statement_id"], TERMINAL)
        return answer

    async def get(self, statement_id: str) -> dict[str, Any]:
        status, answer = await self.request("GET", f"{STATEMENTS}/{statement_id}")
        assert status == 200, answer
        assert isinstance(answer, dict)
        return answer

    async def chunk(self, statement_id: str, index: int) -> dict[str, Any]:
        path = f"{STATEMENTS}/{statement_id}/result/chunks/{index}"
        status, answer = await self.request("GET", path)
        assert status == 200, answer
        assert isinstance(answer, dict)
        return answer

    async def wait_for(self, statement_id: str, states: set[str]) -> dict[str, Any]:
        """Poll until the statement is in one of `states` (bounded: 10 s, 5 ms apart)."""
        for _ in range(2000):
            answer = await self.get(statement_id)
            if answer["status"]["state"] in states:
                return answer
            await asyncio.sleep(0.005)
        raise AssertionError(f"statement never reached {states}: {answer}")


StartWarehouse = Callable[..., Awaitable[Api]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(WALL_CLOCK_START)  # retention, purge, link and token expiry: wall time


@pytest.fixture
async def start_warehouse(local_warehouse: StartLocalWarehouse) -> AsyncIterator[StartWarehouse]:
    """Start a warehouse (BASE_CONFIG with overrides) and return a client for it."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(clock: Callable[[], float] | None = None, **overrides: Any) -> Api:
            warehouse = await local_warehouse(BASE_CONFIG, clock=clock, **overrides)
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    warehouse.url, headers={"Authorization": f"Bearer {warehouse.config.token}"}
                )
            )
            return Api(session, warehouse)

        yield start


@pytest.fixture
async def api(start_warehouse: StartWarehouse) -> Api:
    return await start_warehouse()
