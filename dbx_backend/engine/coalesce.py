"""Coalescing: identical requests in flight share one statement.

In this process, the first request for a key starts a flight (a task the coalescer owns) and
later ones wait for it; each waiter keeps its own deadline, and the flight is cancelled (so is
its statement) only when every waiter has left. A failure reaches every waiter and is not
stored.

Across replicas (a shared `SharedState`), a flight first takes the lock `flight:<key>` (with
an expiry it keeps extending while it runs). A replica that finds the lock held subscribes to
the flight's news and waits: the holder leaves the result under a short-lived name and
announces it, or announces its failure; waiters never poll the warehouse. If the holder
vanishes (its lock expires, or it gave up) a waiter takes the lock and runs the statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from dbx_backend.engine.cache_store import CacheEntry
from dbx_backend.engine.shared_state import SharedState
from dbx_backend.warehouse import errors as warehouse_errors
from dbx_backend.warehouse.errors import WarehouseError

log = logging.getLogger(__name__)

# A flight's result: None when it has none to share (a stream too large to keep a copy of).
Produce = Callable[[], Awaitable[CacheEntry | None]]
WIND_DOWN_S = 1.0


def encode_failure(exc: BaseException) -> bytes:
    """A warehouse error as other replicas can raise it again (its message is safe to log)."""
    if not isinstance(exc, WarehouseError):
        exc = WarehouseError("the shared statement failed")
    return orjson.dumps(
        {
            "class": type(exc).__name__,
            "message": exc.message,
            "status": exc.status,
            "error_code": exc.error_code,
            "retry_after": exc.retry_after,
            "statement_id": exc.statement_id,
            "sql_state": exc.sql_state,
            "may_have_run": exc.may_have_run,
        }
    )


def decode_failure(data: bytes) -> WarehouseError:
    """The error `encode_failure` described; a plain WarehouseError for an unknown class."""
    try:
        fields = orjson.loads(data)
        cls = getattr(warehouse_errors, str(fields["class"]), WarehouseError)
        if not (isinstance(cls, type) and issubclass(cls, WarehouseError)):
            cls = WarehouseError
        return cls(
            str(fields["message"]),
            status=fields.get("status"),
            error_code=fields.get("error_code"),
            retry_after=fields.get("retry_after"),
            statement_id=fields.get("statement_id"),
            sql_state=fields.get("sql_state"),
            may_have_run=bool(fields.get("may_have_run", False)),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return WarehouseError("the shared statement failed")


@dataclass(slots=True)
class _Flight:
    task: asyncio.Task[CacheEntry | None]
    waiters: int = 0
    followed: bool = False  # the statement ran on another replica
    abandoned: bool = False  # every waiter left; it is being cancelled
    joined: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Shared:
    """A result and how this waiter came by it."""

    entry: CacheEntry | None  # None: the flight had no result to share; run one's own
    coalesced: bool  # it waited for a statement started by another request


class Coalescer:
    """Single-flight per key, in this process and (with a shared state) across replicas."""

    def __init__(
        self,
        state: SharedState,
        *,
        lock_ttl_s: float = 10.0,
        result_ttl_s: float = 30.0,
        check_every_s: float = 0.5,
        max_result_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.state = state
        self.lock_ttl_s = lock_ttl_s
        self.result_ttl_s = result_ttl_s
        self.check_every_s = check_every_s
        self.max_result_bytes = max_result_bytes
        self._flights: dict[str, _Flight] = {}

    def in_flight_any(self) -> bool:
        """True while any flight runs in this process."""
        return any(not flight.abandoned for flight in self._flights.values())

    def in_flight(self, key: str) -> bool:
        """True when this process has a flight for `key` that requests may join."""
        flight = self._flights.get(key)
        return flight is not None and not flight.abandoned

    async def run(self, key: str, produce: Produce, *, timeout_s: float | None = None) -> Shared:
        """The result for `key`: from a flight in progress, or from `produce()` in a new one.

        Raises TimeoutError when this waiter's `timeout_s` passes (the flight goes on while
        others wait for it), and the flight's own error when it failed. A waiter cancelled
        leaves the same way.
        """
        flight = self._flights.get(key)
        if flight is not None and flight.abandoned:
            flight = None  # still winding down: a new request gets a flight of its own
        first = flight is None
        if flight is None:
            flight = _Flight(asyncio.get_running_loop().create_task(self._fly(key, produce)))
            self._flights[key] = flight
            flight.task.add_done_callback(functools.partial(self._landed, key, flight))
        flight.waiters += 1
        try:
            async with asyncio.timeout(timeout_s):
                entry = await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.abandoned = True
                flight.task.cancel()  # the last waiter left: stop the statement too
                # Let it wind down (its statement's cancel is on its way) before answering.
                await asyncio.wait({flight.task}, timeout=WIND_DOWN_S)
        return Shared(entry, coalesced=not first or flight.followed)

    def _landed(self, key: str, flight: _Flight, _: object = None) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved: every waiter has seen it, or none is left

    async def _fly(self, key: str, produce: Produce) -> CacheEntry | None:
        lock = "flight:" + key
        for _ in range(100):  # bounded: each turn either leads, or follows a live holder
            token = await self.state.acquire(lock, self.lock_ttl_s)
            if token is not None:
                return await self._lead(key, lock, token, produce)
            entry = await self._follow(key, lock)
            if entry is not None:
                flight = self._flights.get(key)
                if flight is not None:
                    flight.followed = True
                return entry
        # Every holder vanished without a result: run it here rather than wait any longer.
        return await produce()

    async def _lead(self, key: str, lock: str, token: str, produce: Produce) -> CacheEntry | None:
        keeper = asyncio.get_running_loop().create_task(self._keep(lock, token))
        channel = "flight:" + key
        try:
            try:
                entry = await produce()
            except WarehouseError as exc:
                if self.state.shared:
                    await self.state.publish(
                        channel, b"fail " + token.encode() + b" " + encode_failure(exc)
                    )
                raise
            if self.state.shared:
                # Without a result left here, the waiters elsewhere lead flights of their own.
                if entry is not None and len(entry.body) <= self.max_result_bytes:
                    await self.state.put_blob(f"{key}:{token}", entry.to_bytes(), self.result_ttl_s)
                await self.state.publish(channel, b"done " + token.encode())
            return entry
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await asyncio.shield(self.state.release(lock, token))

    async def _keep(self, lock: str, token: str) -> None:
        """Extend the lock while the statement runs, so other replicas keep waiting."""
        while True:
            await asyncio.sleep(self.lock_ttl_s / 3)
            if not await self.state.extend(lock, token, self.lock_ttl_s):
                return

    async def _follow(self, key: str, lock: str) -> CacheEntry | None:
        """Wait for the holder of `lock`; None when it left no result (then try to lead)."""
        async with self.state.subscribe("flight:" + key) as news:
            token = await self.state.holder(lock)
            if token is None:
                return None
            while True:
                message = await news.next(self.check_every_s)
                if message is not None:
                    verb, _, rest = message.partition(b" ")
                    sender, _, payload = rest.partition(b" ")
                    if sender.decode() != token:
                        continue
                    if verb == b"fail":
                        raise decode_failure(payload)
                    return await self._result(key, token)
                if await self.state.holder(lock) != token:
                    # The holder is gone: it finished (its news was missed) or vanished.
                    return await self._result(key, token)

    async def _result(self, key: str, token: str) -> CacheEntry | None:
        data = await self.state.get_blob(f"{key}:{token}")
        if data is None:
            return None
        try:
            return CacheEntry.from_bytes(data)
        except ValueError:
            return None
