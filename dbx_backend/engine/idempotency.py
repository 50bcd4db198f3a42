"""Idempotent submits: one submit per (caller, Idempotency-Key), replayed to every repeat.

In this process, repeats join the first submit's task (an LRU of `max_keys` keys, each kept
`window_s`). With a shared state (`CACHE_URL`), the key is also claimed across replicas: the
replica that takes its lock submits, keeps the lock alive while it does, then records the
answer for `window_s` and announces it; a repeat on another replica waits for that news (or
for the lock to lapse, when its holder vanished) and replays the record. When Redis is down,
each process answers on its own, as without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import orjson

from dbx_backend.engine.coalesce import decode_failure, encode_failure
from dbx_backend.engine.limiter import TooManyQueries
from dbx_backend.engine.open_statements import TooManyStatements
from dbx_backend.engine.shared_state import SharedState
from dbx_backend.engine.tasks import TaskOwner
from dbx_backend.warehouse.errors import WarehouseError
from dbx_backend.warehouse.retry import never_ran
from dbx_backend.warehouse.wire import State

log = logging.getLogger(__name__)

IDEMPOTENCY_MAX_KEYS = 10_000
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A claim lapses this long after its holder stops extending it (it vanished mid-submit).
CLAIM_TTL_S = 10.0
# How often a repeat waiting on another replica looks again when no news came.
CHECK_EVERY_S = 0.5
# Bounds the turns a repeat takes (each waits for a live holder or leads): never reached
# unless holders keep vanishing.
MAX_TURNS = 100

Submit = Callable[[], Awaitable["Submitted"]]


class IdempotencyKeyReused(Exception):
    """An Idempotency-Key came back with a different request body."""

    field = IDEMPOTENCY_HEADER

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def key_reused() -> IdempotencyKeyReused:
    """The error for a key already used with another body."""
    return IdempotencyKeyReused(
        "this Idempotency-Key was already used with a different request; "
        "use a new key for a new statement"
    )


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


@dataclass(frozen=True, slots=True)
class _Record:
    """A key's answer as the shared state keeps it: the handle, or the failure to replay."""

    fingerprint: str
    outcome: Literal["done", "failed"]
    submitted: Submitted | None = None
    failure: bytes = b""

    def to_text(self) -> str:
        fields: dict[str, object] = {"fingerprint": self.fingerprint, "outcome": self.outcome}
        if self.submitted is not None:
            fields |= {
                "handle": self.submitted.handle,
                "state": self.submitted.state,
                "statement_id": self.submitted.statement_id,
            }
        if self.failure:
            fields["failure"] = self.failure.decode()
        return orjson.dumps(fields).decode()

    @classmethod
    def from_text(cls, text: str) -> _Record | None:
        try:
            fields = orjson.loads(text)
            outcome = fields["outcome"]
            if outcome == "done":
                submitted = Submitted(
                    str(fields["handle"]), str(fields["state"]), str(fields["statement_id"])
                )
                return cls(str(fields["fingerprint"]), "done", submitted)
            if outcome == "failed":
                failure = str(fields["failure"]).encode()
                return cls(str(fields["fingerprint"]), "failed", failure=failure)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
        return None  # not a record we wrote: as if there were none

    def replay(self, fingerprint: str) -> Submitted:
        if fingerprint != self.fingerprint:
            raise key_reused()
        if self.submitted is not None:
            return self.submitted
        raise decode_failure(self.failure)


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
        shared: SharedState | None = None,
        claim_ttl_s: float = CLAIM_TTL_S,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self.tasks = tasks if tasks is not None else TaskOwner()
        self.shared = shared
        self.claim_ttl_s = claim_ttl_s
        self.check_every_s = check_every_s
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._submitting: set[asyncio.Task[Submitted]] = set()  # forgotten entries' too

    def __len__(self) -> int:
        return len(self._entries)

    def share(self, state: SharedState) -> None:
        """Claim keys across replicas through `state` (a Redis state) from now on."""
        self.shared = state if state.shared else None

    async def submit_once(
        self,
        key: tuple[str, str],
        fingerprint: str,
        submit: Submit,
    ) -> Submitted:
        """The answer of the first `submit` under `key`; a different body under it is refused."""
        now = self.clock()
        self._forget_expired(now)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise key_reused()
            self._entries.move_to_end(key)
            return await asyncio.shield(entry.task)
        if self.shared is None:
            task = self._submit_here(submit)
        else:
            task = self.tasks.spawn(self._claim(self.shared, key, fingerprint, submit))
        self._entries[key] = _Entry(fingerprint, now, task)
        task.add_done_callback(lambda done: self._settle(key, done))
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
        return await asyncio.shield(task)

    def running(self) -> list[asyncio.Task[Submitted]]:
        """Submits this process sent that still wait for the warehouse's answer: no caller
        holds their handle (repeats waiting on another replica's submit are not among them)."""
        return [task for task in self._submitting if not task.done()]

    def _submit_here(self, submit: Submit) -> asyncio.Task[Submitted]:
        task = self.tasks.spawn(_run(submit))
        self._submitting.add(task)
        task.add_done_callback(self._submitting.discard)
        return task

    def _settle(self, key: tuple[str, str], task: asyncio.Task[Submitted]) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.task is not task:
            return
        # A key reused on another replica: this process's first body was not the first one.
        reused = not task.cancelled() and isinstance(task.exception(), IdempotencyKeyReused)
        if reused or _nothing_ran(task):
            del self._entries[key]

    def _forget_expired(self, now: float) -> None:
        expired = [k for k, e in self._entries.items() if now - e.created >= self.window_s]
        for key in expired:
            del self._entries[key]

    # -- across replicas -------------------------------------------------------------------

    async def _claim(
        self, state: SharedState, key: tuple[str, str], fingerprint: str, submit: Submit
    ) -> Submitted:
        """Replay the key's record, or submit under its lock, or wait for the replica that
        holds it; bounded in turns."""
        name = claim_name(key)
        for _ in range(MAX_TURNS):
            record = await self._record(state, name)
            if record is not None:
                return record.replay(fingerprint)
            token = await state.acquire(name, self.claim_ttl_s)
            if token is not None:
                return await self._lead(state, name, token, fingerprint, submit)
            await self._wait_for_holder(state, name)
        log.warning("an Idempotency-Key's holders kept vanishing: submitting here")
        return await self._run_here(submit)

    async def _record(self, state: SharedState, name: str) -> _Record | None:
        text = await state.get_value(name + ":record")
        return None if text is None else _Record.from_text(text)

    async def _lead(
        self, state: SharedState, name: str, token: str, fingerprint: str, submit: Submit
    ) -> Submitted:
        keeper = asyncio.get_running_loop().create_task(self._keep(state, name, token))
        try:
            record = await self._record(state, name)  # written just before we took the lock?
            if record is not None:
                return record.replay(fingerprint)
            try:
                submitted = await self._run_here(submit)
            except BaseException as exc:
                if isinstance(exc, Exception) and not _never_started(exc):
                    failure = exc if isinstance(exc, WarehouseError) else WarehouseError(str(exc))
                    failed = _Record(fingerprint, "failed", failure=encode_failure(failure))
                    await state.set_value(name + ":record", failed.to_text(), self.window_s)
                raise
            done = _Record(fingerprint, "done", submitted)
            await state.set_value(name + ":record", done.to_text(), self.window_s)
            return submitted
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(Exception):
                await asyncio.shield(state.release(name, token))
                await asyncio.shield(state.publish(name, b"settled " + token.encode()))

    async def _run_here(self, submit: Submit) -> Submitted:
        return await asyncio.shield(self._submit_here(submit))

    async def _keep(self, state: SharedState, name: str, token: str) -> None:
        """Extend the claim while the submit runs, so other replicas keep waiting."""
        while True:
            await asyncio.sleep(self.claim_ttl_s / 3)
            if not await state.extend(name, token, self.claim_ttl_s):
                return

    async def _wait_for_holder(self, state: SharedState, name: str) -> None:
        """Until the replica holding `name` settles it (its news) or vanishes (its lock
        lapses); a bounded wait, since the holder keeps extending a short lock."""
        async with state.subscribe(name) as news:
            holder = await state.holder(name)
            if holder is None:
                return
            for _ in range(MAX_TURNS):
                message = await news.next(self.check_every_s)
                if message is not None and message.removeprefix(b"settled ") == holder.encode():
                    return
                if await state.holder(name) != holder:
                    return


def claim_name(key: tuple[str, str]) -> str:
    """The shared state's name for a (caller, Idempotency-Key): a digest, never the key."""
    return "idempotency:" + hashlib.sha256(f"{key[0]}\0{key[1]}".encode()).hexdigest()


async def _run(submit: Submit) -> Submitted:
    return await submit()


def _never_started(exc: BaseException) -> bool:
    """True when a failed submit proves no statement was started: refused by us, or an
    answer that proves it never ran (4xx, 429, 503, no connection)."""
    return isinstance(exc, (TooManyQueries, TooManyStatements)) or never_ran(exc)


def _nothing_ran(task: asyncio.Task[Submitted]) -> bool:
    """True when the submit failed in a way that proves no statement was started."""
    if task.cancelled():
        return True
    exc = task.exception()  # also marks it retrieved
    return exc is not None and _never_started(exc)
