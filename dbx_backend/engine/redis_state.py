"""The engine's shared state in Redis (`CACHE_URL=redis://host:port/db`), so replicas act as one.

Every Redis call is bounded by `timeout_s`. When Redis fails or is slow, the call answers from
this process's own `LocalState` instead, Redis is left alone for `retry_s`, the problem is
logged at most once a minute and counted: the service keeps answering, per process, and never
fails a request because of Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dbx_backend.engine.cache_store import CacheEntry
from dbx_backend.engine.shared_state import SAMPLES_KEPT, LocalState, Subscription

log = logging.getLogger(__name__)
_T = TypeVar("_T")

PREFIX = "dbx-backend:"
LOG_EVERY_S = 60.0
# Compare-and-delete / compare-and-extend: only the holder's token may touch its lock.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] "
    "then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_FAILURES = (RedisError, OSError, TimeoutError)


def _derived_name(key: str, etag: str, form: str) -> str:
    # The ETag names the entry's content: a newer entry under the key never reads an old body.
    return f"{PREFIX}derived:{key}:{etag}:{form}"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class _RedisSubscription:
    def __init__(self, state: RedisState, channel: str) -> None:
        self._state = state
        self._channel = channel
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._local = state.local.subscribe(channel)

    async def __aenter__(self) -> _RedisSubscription:
        await self._local.__aenter__()
        await self._state.listen(self._channel, self._queue)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._state.unlisten(self._channel, self._queue)
        await self._local.__aexit__(exc_type, exc, traceback)

    async def next(self, timeout_s: float) -> bytes | None:
        # News comes from Redis, or from this process while Redis is down.
        if not self._queue.empty():
            return self._queue.get_nowait()
        local = await self._local.next(0)
        if local is not None:
            return local
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                return await self._queue.get()
        except TimeoutError:
            return await self._local.next(0)


class RedisState:
    """`SharedState` on Redis, with this process's `LocalState` as the fallback."""

    shared = True

    def __init__(
        self,
        url: str,
        local: LocalState,
        *,
        timeout_s: float = 0.25,
        retry_s: float = 5.0,
        on_failure: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._on_failure = on_failure
        self._clock = clock
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )
        self._down_until = float("-inf")
        self._logged_at = float("-inf")
        self._listeners: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.failures = 0

    # -- guarding every call ---------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False while Redis is being left alone after a failure."""
        return self._clock() >= self._down_until

    async def _call(
        self, work: Callable[[], Awaitable[_T]], fallback: Callable[[], Awaitable[_T]]
    ) -> _T:
        if not self.available:
            return await fallback()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await work()
        except _FAILURES as exc:
            self._failed(exc)
            return await fallback()

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        now = self._clock()
        self._down_until = now + self.retry_s
        if self._on_failure is not None:
            self._on_failure()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "Redis (CACHE_URL) unavailable (%s): caching and coalescing per process for now",
                type(exc).__name__,
            )

    # -- entries ---------------------------------------------------------------------------

    async def get_entry(self, key: str) -> CacheEntry | None:
        async def work() -> CacheEntry | None:
            data = await self._client.get(PREFIX + "entry:" + key)
            if not isinstance(data, bytes):
                return None
            try:
                return CacheEntry.from_bytes(data)
            except ValueError:
                return None

        return await self._call(work, lambda: self.local.get_entry(key))

    async def put_entry(self, key: str, entry: CacheEntry, keep_s: float) -> bool:
        store = self.local.store
        if len(entry.body) > store.max_entry_bytes or keep_s <= 0:
            return False

        async def work() -> bool:
            await self._client.set(PREFIX + "entry:" + key, entry.to_bytes(), px=_ms(keep_s))
            return True

        return await self._call(work, lambda: self.local.put_entry(key, entry, keep_s))

    async def get_derived(self, key: str, etag: str, form: str) -> bytes | None:
        async def work() -> bytes | None:
            data = await self._client.get(_derived_name(key, etag, form))
            return data if isinstance(data, bytes) else None

        return await self._call(work, lambda: self.local.get_derived(key, etag, form))

    async def put_derived(self, key: str, etag: str, form: str, body: bytes, keep_s: float) -> None:
        if len(body) > self.local.store.max_entry_bytes or keep_s <= 0:
            return

        async def work() -> None:
            await self._client.set(_derived_name(key, etag, form), body, px=_ms(keep_s))

        await self._call(work, lambda: self.local.put_derived(key, etag, form, body, keep_s))

    # -- locks -----------------------------------------------------------------------------

    async def acquire(self, name: str, ttl_s: float) -> str | None:
        token = secrets.token_hex(8)

        async def work() -> str | None:
            won = await self._client.set(PREFIX + "lock:" + name, token, nx=True, px=_ms(ttl_s))
            return token if won else None

        return await self._call(work, lambda: self.local.acquire(name, ttl_s))

    async def extend(self, name: str, token: str, ttl_s: float) -> bool:
        async def work() -> bool:
            done: Any = await self._client.eval(
                _EXTEND, 1, PREFIX + "lock:" + name, token, _ms(ttl_s)
            )
            return bool(done)

        return await self._call(work, lambda: self.local.extend(name, token, ttl_s))

    async def release(self, name: str, token: str) -> None:
        async def work() -> None:
            await self._client.eval(_RELEASE, 1, PREFIX + "lock:" + name, token)

        await self._call(work, lambda: self.local.release(name, token))

    async def holder(self, name: str) -> str | None:
        async def work() -> str | None:
            data = await self._client.get(PREFIX + "lock:" + name)
            return data.decode() if isinstance(data, bytes) else data

        return await self._call(work, lambda: self.local.holder(name))

    # -- news ------------------------------------------------------------------------------

    def subscribe(self, channel: str) -> Subscription:
        return _RedisSubscription(self, channel)

    async def publish(self, channel: str, message: bytes) -> None:
        async def work() -> None:
            await self._client.publish(PREFIX + "news:" + channel, message)

        async def locally() -> None:  # Redis is down: this process's own waiters still hear
            self.local.hub.publish(channel, message)

        await self._call(work, locally)

    async def listen(self, channel: str, queue: asyncio.Queue[bytes]) -> None:
        """Deliver Redis news on `channel` into `queue` (one listener task per process);
        returns once the listener hears Redis, or after the call timeout if it cannot."""
        self._listeners.setdefault(channel, set()).add(queue)
        if self._listener is None or self._listener.done():
            self._listening.clear()
            self._listener = asyncio.get_running_loop().create_task(self._listen_forever())
        if self.available and not self._listening.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout_s):
                    await self._listening.wait()

    def unlisten(self, channel: str, queue: asyncio.Queue[bytes]) -> None:
        """Stop delivering to `queue`."""
        queues = self._listeners.get(channel)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._listeners[channel]

    async def _listen_forever(self) -> None:
        prefix = PREFIX + "news:"
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(prefix + "*")
                self._listening.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None:
                        continue
                    channel = message["channel"]
                    name = channel.decode() if isinstance(channel, bytes) else str(channel)
                    for queue in self._listeners.get(name.removeprefix(prefix), ()):
                        queue.put_nowait(message["data"])
            except _FAILURES as exc:
                self._listening.clear()
                self._failed(exc)
                await asyncio.sleep(max(self.retry_s, 0.1))
            finally:
                with contextlib.suppress(*_FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    # -- short-lived results, samples and flags --------------------------------------------

    async def put_blob(self, name: str, data: bytes, ttl_s: float) -> None:
        async def work() -> None:
            await self._client.set(PREFIX + "blob:" + name, data, px=_ms(ttl_s))

        await self._call(work, lambda: self.local.put_blob(name, data, ttl_s))

    async def get_blob(self, name: str) -> bytes | None:
        async def work() -> bytes | None:
            data = await self._client.get(PREFIX + "blob:" + name)
            return data if isinstance(data, bytes) else None

        return await self._call(work, lambda: self.local.get_blob(name))

    async def push_sample(self, name: str, value: float) -> None:
        key = PREFIX + "samples:" + name

        async def work() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(key, repr(value))
                pipe.ltrim(key, 0, SAMPLES_KEPT - 1)
                await pipe.execute()

        await self._call(work, lambda: self.local.push_sample(name, value))

    async def samples(self, name: str) -> list[float]:
        async def work() -> list[float]:
            raw = await self._client.lrange(PREFIX + "samples:" + name, 0, -1)
            values = []
            for item in raw:
                with contextlib.suppress(ValueError):
                    values.append(float(item))
            return values

        return await self._call(work, lambda: self.local.samples(name))

    async def set_value(
        self, name: str, value: str, ttl_s: float, *, only_if_absent: bool = False
    ) -> bool:
        async def work() -> bool:
            done = await self._client.set(
                PREFIX + "value:" + name, value, px=_ms(ttl_s), nx=only_if_absent
            )
            return bool(done)

        return await self._call(
            work, lambda: self.local.set_value(name, value, ttl_s, only_if_absent=only_if_absent)
        )

    async def get_value(self, name: str) -> str | None:
        async def work() -> str | None:
            data = await self._client.get(PREFIX + "value:" + name)
            return data.decode() if isinstance(data, bytes) else data

        return await self._call(work, lambda: self.local.get_value(name))

    async def delete_value(self, name: str) -> None:
        async def work() -> None:
            await self._client.delete(PREFIX + "value:" + name)

        await self._call(work, lambda: self.local.delete_value(name))

    async def close(self) -> None:
        """Stop the listener and close the connections."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, *_FAILURES):
                await self._listener
        with contextlib.suppress(*_FAILURES):
            await self._client.aclose()
