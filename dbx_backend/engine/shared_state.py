"""State the engine keeps beside statements: cached results, flight locks and their news,
short-lived results for waiters, warehouse start samples and flags.

`LocalState` keeps it in this process (the default); `RedisState` (redis_state.py) keeps it
in Redis when `CACHE_URL` is set, so replicas behave as one. Both have this interface, and the
engine is written against it once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from dbx_backend.engine.cache_store import CacheEntry, MemoryStore

SAMPLES_KEPT = 20


class Subscription(Protocol):
    """News on one channel, from the moment of subscribing."""

    async def __aenter__(self) -> Subscription: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def next(self, timeout_s: float) -> bytes | None:
        """The next message, or None when none came within `timeout_s`."""
        ...


class SharedState(Protocol):
    """Where cached results and coordination live (this process, or Redis)."""

    @property
    def shared(self) -> bool:
        """True when other processes see the same state."""
        ...

    async def get_entry(self, key: str) -> CacheEntry | None: ...

    async def put_entry(self, key: str, entry: CacheEntry, keep_s: float) -> bool: ...

    async def get_derived(self, key: str, etag: str, form: str) -> bytes | None:
        """Another format's body of the entry under `key` with `etag`, if one was kept."""
        ...

    async def put_derived(self, key: str, etag: str, form: str, body: bytes, keep_s: float) -> None:
        """Keep another format's body of that entry (for at most `keep_s`), when it fits."""
        ...

    async def acquire(self, name: str, ttl_s: float) -> str | None:
        """A token when `name` was free (and is now ours for `ttl_s`), else None."""
        ...

    async def extend(self, name: str, token: str, ttl_s: float) -> bool: ...

    async def release(self, name: str, token: str) -> None: ...

    async def holder(self, name: str) -> str | None:
        """The token holding `name`, or None when it is free."""
        ...

    def subscribe(self, channel: str) -> Subscription: ...

    async def publish(self, channel: str, message: bytes) -> None: ...

    async def put_blob(self, name: str, data: bytes, ttl_s: float) -> None: ...

    async def get_blob(self, name: str) -> bytes | None: ...

    async def push_sample(self, name: str, value: float) -> None:
        """Remember `value` among the last SAMPLES_KEPT of `name`."""
        ...

    async def samples(self, name: str) -> list[float]: ...

    async def set_value(
        self, name: str, value: str, ttl_s: float, *, only_if_absent: bool = False
    ) -> bool: ...

    async def get_value(self, name: str) -> str | None: ...

    async def delete_value(self, name: str) -> None: ...

    async def close(self) -> None: ...


class _LocalSubscription:
    def __init__(self, hub: LocalHub, channel: str) -> None:
        self._hub = hub
        self._channel = channel
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def __aenter__(self) -> _LocalSubscription:
        self._hub.listeners.setdefault(self._channel, set()).add(self._queue)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        listeners = self._hub.listeners.get(self._channel)
        if listeners is not None:
            listeners.discard(self._queue)
            if not listeners:
                del self._hub.listeners[self._channel]

    async def next(self, timeout_s: float) -> bytes | None:
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                return await self._queue.get()
        except TimeoutError:
            return None


class LocalHub:
    """In-process publish/subscribe: each message reaches every subscriber of its channel."""

    def __init__(self) -> None:
        self.listeners: dict[str, set[asyncio.Queue[bytes]]] = {}

    def subscribe(self, channel: str) -> Subscription:
        """Messages on `channel` from now on (use as `async with`)."""
        return _LocalSubscription(self, channel)

    def publish(self, channel: str, message: bytes) -> None:
        """Deliver to the subscribers of `channel` in this process."""
        for queue in self.listeners.get(channel, ()):
            queue.put_nowait(message)


class LocalState:
    """Everything in this process: a bounded LRU of entries, locks, news, samples, flags."""

    shared = False

    def __init__(self, store: MemoryStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.hub = LocalHub()
        self._locks: dict[str, tuple[str, float]] = {}
        self._values: dict[str, tuple[str, float]] = {}
        self._blobs: dict[str, tuple[bytes, float]] = {}
        self._samples: dict[str, deque[float]] = {}

    async def get_entry(self, key: str) -> CacheEntry | None:
        return self.store.get(key)

    async def put_entry(self, key: str, entry: CacheEntry, keep_s: float) -> bool:
        return self.store.put(key, entry, keep_s)

    async def get_derived(self, key: str, etag: str, form: str) -> bytes | None:
        return self.store.get_derived(key, etag, form)

    async def put_derived(self, key: str, etag: str, form: str, body: bytes, keep_s: float) -> None:
        self.store.put_derived(key, etag, form, body)  # it lives (and goes) with its entry

    async def acquire(self, name: str, ttl_s: float) -> str | None:
        held = self._locks.get(name)
        if held is not None and held[1] > self.clock():
            return None
        token = secrets.token_hex(8)
        self._locks[name] = (token, self.clock() + ttl_s)
        return token

    async def extend(self, name: str, token: str, ttl_s: float) -> bool:
        held = self._locks.get(name)
        if held is None or held[0] != token:
            return False
        self._locks[name] = (token, self.clock() + ttl_s)
        return True

    async def release(self, name: str, token: str) -> None:
        held = self._locks.get(name)
        if held is not None and held[0] == token:
            del self._locks[name]

    async def holder(self, name: str) -> str | None:
        held = self._locks.get(name)
        return held[0] if held is not None and held[1] > self.clock() else None

    def subscribe(self, channel: str) -> Subscription:
        return self.hub.subscribe(channel)

    async def publish(self, channel: str, message: bytes) -> None:
        self.hub.publish(channel, message)

    async def put_blob(self, name: str, data: bytes, ttl_s: float) -> None:
        now = self.clock()
        for stale in [k for k, (_, until) in self._blobs.items() if until <= now]:
            del self._blobs[stale]
        self._blobs[name] = (data, now + ttl_s)

    async def get_blob(self, name: str) -> bytes | None:
        found = self._blobs.get(name)
        return found[0] if found is not None and found[1] > self.clock() else None

    async def push_sample(self, name: str, value: float) -> None:
        self._samples.setdefault(name, deque(maxlen=SAMPLES_KEPT)).appendleft(value)

    async def samples(self, name: str) -> list[float]:
        return list(self._samples.get(name, ()))

    async def set_value(
        self, name: str, value: str, ttl_s: float, *, only_if_absent: bool = False
    ) -> bool:
        if only_if_absent and await self.get_value(name) is not None:
            return False
        self._values[name] = (value, self.clock() + ttl_s)
        return True

    async def get_value(self, name: str) -> str | None:
        found = self._values.get(name)
        return found[0] if found is not None and found[1] > self.clock() else None

    async def delete_value(self, name: str) -> None:
        self._values.pop(name, None)

    async def close(self) -> None:
        return None
