"""The open-statements budget over loopback HTTP against the local warehouse: filled with slow
statements it refuses the next submit before the warehouse sees it, and every way a statement
ends gives its slot back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from dbx_backend.engine.open_statements import CheckPolicy
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.keys import OPEN_STATEMENTS
from dbx_backend.localwarehouse import LocalWarehouse
from dbx_backend.warehouse.retry import NO_WAIT
from tests.conftest import StartLocalWarehouse

TOKEN = "dapi-local-open-statements"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
MakeService = Callable[..., Awaitable[Client]]
SLOW = {"sql": "SELECT sleep_ms(30000) AS slept"}  # runs until cancelled, for these tests
# Still RUNNING when the submit's shrunk wait (50 ms) ends, then SUCCEEDED soon after.
SHORT = {"sql": "SELECT sleep_ms(300) AS slept"}
FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"}


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    return await local_warehouse(token=TOKEN, wait_timeout_scale=0.01)


@pytest.fixture
def service(warehouse: LocalWarehouse, aiohttp_client: MakeClient) -> MakeService:
    async def make(policy: CheckPolicy | None = None, **env: str) -> Client:
        settings = load_settings(
            {
                "DATABRICKS_HOST": warehouse.url,
                "DATABRICKS_HTTP_PATH": warehouse.http_path,
                "DATABRICKS_TOKEN": TOKEN,
                **env,
            },
            env_file=None,
        )
        poll = PollSchedule(0.01, 1, 0.01)
        app = create_app(settings, retry_policy=NO_WAIT, poll_schedule=poll)
        if policy is not None:
            app[OPEN_STATEMENTS].policy = policy
        return await aiohttp_client(app)

    return make


def executes(warehouse: LocalWarehouse) -> int:
    return sum(1 for r in warehouse.requests if r.endpoint == "execute")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submit(client: Client, body: dict[str, Any], **headers: str) -> tuple[int, Any, Any]:
    response = await client.post("/api/statements", json=body, headers=headers)
    return response.status, await response.json(), response.headers


async def poll_to_end(client: Client, handle: str, **headers: str) -> str:
    """Poll until the statement reaches a final state (bounded: 10 s)."""
    for _ in range(1000):
        response = await client.get(f"/api/statements/{handle}?limit=0", headers=headers)
        state: str = (await response.json())["state"]
        if state in FINAL:
            return state
        await asyncio.sleep(0.01)
    raise AssertionError("the statement never ended")


async def test_a_full_budget_refuses_before_the_warehouse_and_a_cancel_frees_a_slot(
    service: MakeService, warehouse: LocalWarehouse
) -> None:
    client = await service(MAX_OPEN_STATEMENTS="3")
    handles = []
    for _ in range(3):
        status, body, _ = await submit(client, SLOW)
        assert status == 202, body
        handles.append(body["statement_id"])

    status, refused, headers = await submit(client, SLOW)
    assert status == 429
    assert refused["error"]["code"] == "TOO_MANY_STATEMENTS"
    assert refused["error"]["retryable"] is True
    assert "MAX_OPEN_STATEMENTS" in refused["error"]["message"]
    assert int(headers["Retry-After"]) >= 1
    assert executes(warehouse) == 3  # the refused submit never reached the warehouse

    cancel = await client.delete(f"/api/statements/{handles[0]}")
    status, again, _ = await submit(client, SLOW)

    assert cancel.status == 202
    assert status == 202, again
    assert executes(warehouse) == 4
    for handle in [*handles[1:], again["statement_id"]]:
        await client.delete(f"/api/statements/{handle}")


async def test_a_statement_polled_to_its_end_gives_its_slot_back(
    service: MakeService, warehouse: LocalWarehouse
) -> None:
    client = await service(MAX_OPEN_STATEMENTS="1")
    status, first, _ = await submit(client, SHORT)
    assert (status, first["state"] in ("PENDING", "RUNNING")) == (202, True)
    refused, _, _ = await submit(client, SHORT)

    final = await poll_to_end(client, first["statement_id"])
    status, second, _ = await submit(client, SHORT)

    assert refused == 429
    assert final == "SUCCEEDED"
    assert status == 202, second
    await poll_to_end(client, second["statement_id"])


async def test_a_statement_that_ended_at_submit_holds_no_slot(service: MakeService) -> None:
    client = await service(MAX_OPEN_STATEMENTS="1")

    body = {"sql": "SELECT 1 AS one", "wait_s": 5}  # it ends while the submit waits
    answers = [await submit(client, body) for _ in range(3)]

    assert [(status, body["state"]) for status, body, _ in answers] == [(202, "SUCCEEDED")] * 3


async def test_each_api_key_has_its_own_budget(service: MakeService) -> None:
    client = await service(MAX_OPEN_STATEMENTS="1", API_KEYS="key-one,key-two")

    first, body, _ = await submit(client, SLOW, **bearer("key-one"))
    again, _, _ = await submit(client, SLOW, **bearer("key-one"))
    other, other_body, _ = await submit(client, SLOW, **bearer("key-two"))

    assert (first, again, other) == (202, 429, 202)
    await client.delete(f"/api/statements/{body['statement_id']}", headers=bearer("key-one"))
    await client.delete(f"/api/statements/{other_body['statement_id']}", headers=bearer("key-two"))


async def test_a_replayed_idempotent_submit_takes_no_second_slot(service: MakeService) -> None:
    client = await service(MAX_OPEN_STATEMENTS="1")

    first, body, _ = await submit(client, SLOW, **{"Idempotency-Key": "k-1"})
    replay, replayed, _ = await submit(client, SLOW, **{"Idempotency-Key": "k-1"})
    fresh, _, _ = await submit(client, SLOW, **{"Idempotency-Key": "k-2"})

    assert (first, replay, fresh) == (202, 202, 429)
    assert replayed["statement_id"] == body["statement_id"]
    await client.delete(f"/api/statements/{body['statement_id']}")


async def test_the_background_check_frees_a_statement_nobody_polled(
    service: MakeService, warehouse: LocalWarehouse
) -> None:
    policy = CheckPolicy(interval_s=0.05, idle_s=0.0, max_lookups=5, lookup_timeout_s=5.0)
    client = await service(policy, MAX_OPEN_STATEMENTS="1")
    status, _, _ = await submit(client, SHORT)
    assert status == 202
    refused, _, _ = await submit(client, SHORT)  # still running: the check keeps its slot

    for _ in range(200):  # bounded: the statement ends after 0.3 s, checks run every 0.05 s
        status, body, _ = await submit(client, SHORT)
        if status == 202:
            break
        await asyncio.sleep(0.05)

    assert refused == 429
    assert status == 202
    assert any(r.endpoint == "get_statement" for r in warehouse.requests)
    await poll_to_end(client, body["statement_id"])
