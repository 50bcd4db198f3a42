"""Two service processes on one Redis and one local warehouse act as one service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from dbx_backend.localwarehouse import LocalWarehouse
from tests.conftest import StartLocalWarehouse
from tests.devprocess import free_port
from tests.redisserver import RedisServer

TOKEN = "dapi-replicas-0123456789abcdef"
HANDLE_SECRET = "replicas-share-this-handle-secret"


@contextlib.asynccontextmanager
async def replica(
    warehouse: LocalWarehouse, redis_url: str, workdir: Path, **settings: str
) -> AsyncIterator[str]:
    """`dbx-backend serve` on a free port (with `settings` on top of the shared ones); its
    base URL once /health answers."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "CACHE_"))}
    env = {
        **base,
        "DATABRICKS_HOST": warehouse.url,
        "DATABRICKS_HTTP_PATH": warehouse.http_path,
        "DATABRICKS_TOKEN": TOKEN,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "CACHE_URL": redis_url,
        "STATEMENT_HANDLE_SECRET": HANDLE_SECRET,
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    log = workdir / f"replica-{port}.log"
    with log.open("w") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dbx_backend",
            "serve",
            cwd=workdir,
            env=env,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(300):  # up to ~30 s on a loaded machine
                    if process.returncode is not None:
                        pytest.fail(f"replica exited: {log.read_text()}")
                    try:
                        async with session.get(url + "/health") as health:
                            if health.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail("replica did not answer /health in time")
            yield url
        finally:
            if process.returncode is None:
                process.terminate()
            async with asyncio.timeout(30):
                await process.wait()


@pytest.fixture
async def replicas(
    redis_server: RedisServer, tmp_path: Path, local_warehouse: StartLocalWarehouse
) -> AsyncIterator[tuple[LocalWarehouse, str, str]]:
    warehouse = await local_warehouse(token=TOKEN)
    async with (
        replica(warehouse, redis_server.url, tmp_path) as one,
        replica(warehouse, redis_server.url, tmp_path) as other,
    ):
        yield warehouse, one, other


def executes(warehouse: LocalWarehouse) -> int:
    return sum(1 for r in warehouse.requests if r.endpoint == "execute")


async def post(url: str, body: dict[str, Any], **headers: str) -> tuple[int, Any, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as response,
    ):
        timing = response.headers.get("Server-Timing", "")
        return response.status, await response.json(), timing


async def test_the_same_query_sent_to_both_at_once_runs_once(
    replicas: tuple[LocalWarehouse, str, str],
) -> None:
    warehouse, one, other = replicas
    body = {"sql": "SELECT sleep_ms(800) AS slept, 7 AS answer"}

    answers = await asyncio.gather(post(one + "/api/query", body), post(other + "/api/query", body))

    assert [a[0] for a in answers] == [200, 200]
    assert answers[0][1]["rows"] == answers[1][1]["rows"] == [[800, 7]]
    assert sorted(a[2].split("cache;desc=")[1] for a in answers) == ["coalesced", "miss"]
    assert executes(warehouse) == 1


async def test_a_result_cached_by_one_is_a_hit_on_the_other(
    replicas: tuple[LocalWarehouse, str, str],
) -> None:
    warehouse, one, other = replicas
    body = {"sql": "SELECT 42 AS answer"}

    first = await post(one + "/api/query", body)
    second = await post(other + "/api/query", body)

    assert first[2].endswith("cache;desc=miss")
    assert second[2].endswith("cache;desc=hit")
    assert executes(warehouse) == 1


async def test_a_statement_handle_made_on_one_is_honoured_by_the_other(
    replicas: tuple[LocalWarehouse, str, str],
) -> None:
    _, one, other = replicas

    status, submitted, _ = await post(one + "/api/statements", {"sql": "SELECT 5 AS five"})
    handle = submitted["statement_id"]
    async with aiohttp.ClientSession() as session:
        for _ in range(200):  # bounded: the statement ends within a few polls
            async with session.get(f"{other}/api/statements/{handle}") as response:
                seen = await response.json()
            if seen["state"] in ("SUCCEEDED", "FAILED", "CANCELED"):
                break
            await asyncio.sleep(0.02)

    assert status == 202
    assert seen["state"] == "SUCCEEDED"
    assert seen["rows"] == [[5]]


async def test_an_idempotency_key_used_on_one_is_honoured_by_the_other(
    replicas: tuple[LocalWarehouse, str, str],
) -> None:
    warehouse, one, other = replicas
    key = {"Idempotency-Key": "replicas-key-1"}

    first = await post(one + "/api/statements", {"sql": "SELECT 6 AS six"}, **key)
    again = await post(other + "/api/statements", {"sql": "SELECT 6 AS six"}, **key)
    reused = await post(other + "/api/statements", {"sql": "SELECT 7 AS seven"}, **key)

    assert (first[0], again[0]) == (202, 202)
    assert again[1]["statement_id"] == first[1]["statement_id"]
    assert (reused[0], reused[1]["error"]["field"]) == (400, "Idempotency-Key")
    assert executes(warehouse) == 1


async def test_one_idempotency_key_sent_to_both_at_once_submits_once(
    replicas: tuple[LocalWarehouse, str, str],
) -> None:
    warehouse, one, other = replicas
    key = {"Idempotency-Key": "replicas-key-2"}
    body = {"sql": "SELECT sleep_ms(300) AS slept"}

    answers = await asyncio.gather(
        post(one + "/api/statements", body, **key), post(other + "/api/statements", body, **key)
    )

    assert [a[0] for a in answers] == [202, 202]
    assert answers[0][1]["statement_id"] == answers[1][1]["statement_id"]
    assert executes(warehouse) == 1


async def test_a_stream_and_a_buffered_request_sent_to_both_at_once_run_once(
    replicas: tuple[LocalWarehouse, str, str],
) -> None:
    warehouse, one, other = replicas
    body = {"sql": "SELECT sleep_ms(800) AS slept, 8 AS answer"}

    async def streamed() -> tuple[int, list[Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                one + "/api/query", json=body, headers={"Accept": "application/x-ndjson"}
            ) as response,
        ):
            lines = (await response.read()).splitlines()
            return response.status, [orjson.loads(line) for line in lines]

    (status, lines), buffered = await asyncio.gather(streamed(), post(other + "/api/query", body))

    assert (status, buffered[0]) == (200, 200)
    assert lines[1:-1] == buffered[1]["rows"] == [[800, 8]]
    assert executes(warehouse) == 1


async def test_a_waiter_whose_leader_had_no_memory_gets_503_or_its_own_answer(
    redis_server: RedisServer, tmp_path: Path, local_warehouse: StartLocalWarehouse
) -> None:
    warehouse = await local_warehouse(token=TOKEN)
    tight = {"MEMORY_BUDGET_MB": "1", "MEMORY_WAIT_S": "0.1"}
    async with (
        replica(warehouse, redis_server.url, tmp_path, **tight) as one,
        replica(warehouse, redis_server.url, tmp_path) as other,
        aiohttp.ClientSession() as session,
    ):
        # A stream on `one` whose client does not read: its window holds the whole budget.
        wide = "SELECT id, repeat('x', 4000) AS pad FROM range(20000) AS t(id)"
        stalled = await session.post(
            one + "/api/query", json={"sql": wide}, headers={"Accept": "application/x-ndjson"}
        )
        body = {"sql": "SELECT sleep_ms(1500) AS slept, 7 AS answer"}
        leader = asyncio.create_task(post(one + "/api/query", body))
        await asyncio.sleep(0.5)  # `one` leads the flight; `other` waits for its news
        waiter = await post(other + "/api/query", body)
        led = await leader
        stalled.close()

    assert stalled.status == 200
    assert led[0] == 503
    assert led[1]["error"]["code"] == "SERVICE_BUSY"
    status, answer, _ = waiter
    if status == 503:
        assert answer["error"]["code"] == "SERVICE_BUSY"
        assert answer["error"]["retryable"] is True
    else:  # it ran the statement itself
        assert status == 200
        assert answer["rows"] == [[1500, 7]]
        assert waiter[2].endswith("cache;desc=miss")
