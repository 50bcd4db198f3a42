"""Idempotent submits: one submit per (caller, Idempotency-Key), replayed to every repeat.

Kept in this process's memory (an LRU of `max_keys`, each for `window_s`): across replicas a
retry that lands elsewhere submits again unless the load balancer is sticky on the key.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dbx_backend.engine.limiter import TooManyQueries
from dbx_backend.engine.open_statements import TooManyStatements
from dbx_backend.engine.tasks import TaskOwner
from dbx_backend.warehouse.retry import never_ran
from dbx_backend.warehouse.wire import State

IDEMPOTENCY_MAX_KEYS = 10_000
IDEMPOTENCY_HEADER = "Idempotency-Key"


class IdempotencyKeyReused(Exception):
    """An Idempotency-Key came back with a different request body."""

    field = IDEMPOTENCY_HEADER

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Submitted:
    """What a submit answered: replayed as is for a repeated Idempotency-Key."""

    handle: str
    state: str
    statement_id: str


def still_running(submitted: Submitted) -> str | None:
    """The statement id of a submit whose statement may still run, else None."""
    return None if submitted.state in State.TERMINAL else submitted.statement_id


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    created: float
    task: asyncio.Task[Submitted]


class IdempotencyStore:
    """Submits keyed by (caller, Idempotency-Key), kept `window_s` in an LRU of `max_keys`.

    Submits run in tasks of the process's `TaskOwner`, so a caller that leaves does not stop
    one that a retry will ask for; a concurrent duplicate awaits the same task. A submit that
    failed before anything could run (429, 503, no connection, our own limits) is forgotten, so
    a retry may try again; any other failure is replayed, since the statement may have run.
    """

    def __init__(
        self,
        window_s: float,
        *,
        max_keys: int = IDEMPOTENCY_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        tasks: TaskOwner | None = None,
    ) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self.tasks = tasks if tasks is not None else TaskOwner()
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._submitting: set[asyncio.Task[Submitted]] = set()  # forgotten entries' too

    def __len__(self) -> int:
        return len(self._entries)

    async def submit_once(
        self,
        key: tuple[str, str],
        fingerprint: str,
        submit: Callable[[], Awaitable[Submitted]],
    ) -> Submitted:
        """The answer of the first `submit` under `key`; a different body under it is refused."""
        now = self.clock()
        self._forget_expired(now)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was already used with a different request; "
                    "use a new key for a new statement"
                )
            self._entries.move_to_end(key)
            return await asyncio.shield(entry.task)
        task = self.tasks.spawn(_run(submit))
        self._entries[key] = _Entry(fingerprint, now, task)
        self._submitting.add(task)
        task.add_done_callback(self._submitting.discard)
        task.add_done_callback(lambda done: self._settle(key, done))
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
        return await asyncio.shield(task)

    def running(self) -> list[asyncio.Task[Submitted]]:
        """Submits still waiting for the warehouse's answer: no caller holds their handle."""
        return [task for task in self._submitting if not task.done()]

    def _settle(self, key: tuple[str, str], task: asyncio.Task[Submitted]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.task is task and _nothing_ran(task):
            del self._entries[key]

    def _forget_expired(self, now: float) -> None:
        expired = [k for k, e in self._entries.items() if now - e.created >= self.window_s]
        for key in expired:
            del self._entries[key]


async def _run(submit: Callable[[], Awaitable[Submitted]]) -> Submitted:
    return await submit()


def _nothing_ran(task: asyncio.Task[Submitted]) -> bool:
    """True when the submit failed in a way that proves no statement was started."""
    if task.cancelled():
        return True
    exc = task.exception()  # also marks it retrieved
    if exc is None:
        return False
    # Refused by us, or an answer that proves it never ran (4xx, 429, 503, no connection).
    return isinstance(exc, (TooManyQueries, TooManyStatements)) or never_ran(exc)
