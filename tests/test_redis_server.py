"""The Redis fixture: a real server the shared-cache tests can stop and start again."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.redisserver import RedisServer


async def test_the_fixture_serves_a_real_redis_on_loopback(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.set("k", b"v", px=10_000)
        value = await client.get("k")
    finally:
        await client.aclose()

    assert redis_server.url.startswith("redis://127.0.0.1:")
    assert value == b"v"


async def test_a_stopped_server_refuses_and_a_restart_serves_on_the_same_url(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    client = aioredis.Redis.from_url(redis_server.url, socket_connect_timeout=1)
    try:
        with pytest.raises(RedisConnectionError):
            await client.ping()
        redis_server.start()
        answer = await client.ping()
    finally:
        await client.aclose()

    assert answer is True
