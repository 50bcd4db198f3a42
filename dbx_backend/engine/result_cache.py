"""The one place results are cached, identical runs coalesced and cold warehouses handled.

Every run of `/api/query` and `/api/queries/{name}`, buffered or streamed, asks
`ResultCache.answer`, giving it the key, whether the statement may be cached, the caller's
`Cache-Control` and a `run` that executes the statement and encodes its answer (a stream's
`run` also hands its rows to the request through a `LiveResult`, see live.py). In order:

1. an entry fresh enough answers at once (`hit`); one in its stale-while-revalidate window
   answers at once too (`stale`) while one background refresh runs;
2. `only-if-cached` with no such entry is `NotCached`;
3. if the warehouse may not be RUNNING, its state is read: a usable entry answers (`stale`),
   else the request waits for the start when its deadline leaves room, else it is refused
   with the ETA (`WarehouseStarting` / `WarehouseStopped`), no statement submitted;
4. otherwise the statement runs once for every identical request in flight (`miss` for the
   one that ran it, `coalesced` for the others, `bypass` when nothing may be cached) and the
   result is stored when it may be. A warehouse failure is answered by a usable entry if any.
   A streamed request that runs the statement gets its `LiveResult` back as soon as the
   statement ended, and streams; the others get the entry the stream's copy made, or, when
   the result was too large to copy (or capped, for a stream), run statements of their own.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from dbx_backend.engine.cache_control import CacheRequest
from dbx_backend.engine.cache_store import CacheEntry
from dbx_backend.engine.coalesce import Coalescer
from dbx_backend.engine.live import LiveResult
from dbx_backend.engine.shared_state import LocalState, SharedState
from dbx_backend.engine.tasks import TaskOwner
from dbx_backend.engine.warehouse_state import (
    WarehouseNotRunning,
    WarehouseStarting,
    WarehouseStatus,
    WarehouseStopped,
    WarehouseTracker,
)
from dbx_backend.warehouse.errors import (
    StatementTimedOut,
    WarehouseError,
    WarehouseUnavailable,
)
from dbx_backend.warehouse.wire import WarehouseState

log = logging.getLogger(__name__)

CacheStatus = Literal["hit", "miss", "stale", "coalesced", "bypass"]
# A statement still unfinished after this long makes the warehouse's state worth a look.
PENDING_DOUBT_S = 1.0
# Time kept, after waiting for a start, for the statement itself.
RUN_MARGIN_S = 2.0
# Flights a request waits on before it runs its statement alone: the identical ones it joined
# may end with no result it can use (a stream too large to share, a capped answer).
FLIGHTS_PER_REQUEST = 3
# Writing another format's body from an entry this large takes long enough to stall others.
THREAD_MAKE_BYTES = 256 * 1024
_NOT_RUNNING = frozenset({WarehouseState.STOPPED, WarehouseState.STOPPING, WarehouseState.STARTING})


class NotCached(Exception):
    """`Cache-Control: only-if-cached` and no entry can answer."""


class CacheObserver(Protocol):
    """Hears what the cache did (metrics)."""

    def cache_answered(self, status: str) -> None: ...

    def cache_refreshed(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How long a query's results are kept fresh, and stale-while-revalidate after that."""

    ttl_s: float
    stale_s: float = 0.0

    @property
    def enabled(self) -> bool:
        """False when its results are never stored (TTL 0, `-- cache: off`)."""
        return self.ttl_s > 0


@dataclass(frozen=True, slots=True)
class Produced:
    """A statement's encoded answer, as `run` returns it."""

    body: bytes
    etag: str
    row_count: int
    statement_id: str
    storable: bool  # complete: not truncated, within the entry cap
    details: object = None  # what the run knows besides (timings, stats), for its own request
    truncated: bool = False  # a cap cut its rows


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send: the entry, how it was come by, how old it is."""

    entry: CacheEntry
    status: CacheStatus
    age_s: float
    stored: bool  # it is in the cache: the response may say `max-age`
    produced: Produced | None = None  # set when this request ran the statement
    warehouse: WarehouseStatus | None = None  # why a stale entry answered
    fresh_for_s: int = 0  # seconds a client may keep it: 0 when stale or not stored


# None: a stream whose result was too large to keep a copy of (its request streamed it).
Run = Callable[[], Awaitable[Produced | None]]


class ResultCache:
    """Cache + coalescing + cold starts in front of every buffered run of a statement."""

    def __init__(
        self,
        state: SharedState,
        coalescer: Coalescer,
        tracker: WarehouseTracker,
        *,
        stale_if_error_s: float,
        flight_timeout_s: float,
        clock: Callable[[], float] = time.time,
        observer: CacheObserver | None = None,
        tasks: TaskOwner | None = None,
    ) -> None:
        self.state = state
        self.coalescer = coalescer
        self.tracker = tracker
        self.stale_if_error_s = stale_if_error_s
        self.flight_timeout_s = flight_timeout_s
        self.clock = clock
        self.observer = observer
        self.tasks = tasks if tasks is not None else TaskOwner()
        self._refreshes: set[asyncio.Task[None]] = set()  # cancelled, not awaited, at shutdown
        # In this process's memory an entry is had without a coroutine (every hit asks).
        self._peek = state.store.get if isinstance(state, LocalState) else None

    async def answer(
        self,
        key: str,
        *,
        cacheable: bool,
        policy: CachePolicy,
        request: CacheRequest,
        timeout_s: float,
        run: Run,
        statement_id: Callable[[], str | None] = lambda: None,
        live: LiveResult[Any] | None = None,
    ) -> Answer | LiveResult[Any]:
        """The answer for one request (see the module's docstring for the order).

        `statement_id()` names the statement this request started, if any, for its timeout.
        A streamed request passes the `live` its `run` writes to: it is returned when this
        request runs the statement (its rows follow through it); any other answer is an entry.
        """
        caching = cacheable and policy.ttl_s > 0
        entry = None
        if caching:
            entry = self._peek(key) if self._peek else await self.state.get_entry(key)
        hit = self._hit(entry, request) if entry is not None else None
        if hit is not None:
            if live is not None:
                live.detached = True
            return hit
        try:
            result = await self._answer(
                key,
                entry,
                cacheable=cacheable,
                policy=policy,
                request=request,
                timeout_s=timeout_s,
                run=run,
                statement_id=statement_id,
                live=live,
            )
        except BaseException:
            if live is not None:
                live.detached = True  # a refresh may still run it: nobody reads
            raise
        if live is not None and result is not live:
            live.detached = True
        return result

    def fresh(
        self, key: str, *, cacheable: bool, policy: CachePolicy, request: CacheRequest
    ) -> Answer | None:
        """The `hit` answer, when this process's memory holds a fresh enough entry; else None
        (then `answer` decides). No coroutine, no I/O: the path every hit takes first."""
        if self._peek is None or not cacheable or policy.ttl_s <= 0:
            return None
        entry = self._peek(key)
        return self._hit(entry, request) if entry is not None else None

    def _hit(self, entry: CacheEntry, request: CacheRequest) -> Answer | None:
        """`entry` as a hit, when it is fresh and the request lets it answer."""
        if request.no_cache or request.no_store:
            return None
        age = max(0.0, self.clock() - entry.stored_at)
        if age >= entry.ttl_s or (request.max_age_s is not None and age > request.max_age_s):
            return None
        if self.observer is not None:
            self.observer.cache_answered("hit")
        return Answer(entry, "hit", age, True, fresh_for_s=int(entry.ttl_s - age))

    async def _answer(
        self,
        key: str,
        entry: CacheEntry | None,
        *,
        cacheable: bool,
        policy: CachePolicy,
        request: CacheRequest,
        timeout_s: float,
        run: Run,
        statement_id: Callable[[], str | None],
        live: LiveResult[Any] | None,
    ) -> Answer | LiveResult[Any]:
        caching = cacheable and policy.enabled
        now = self.clock()
        deadline = now + timeout_s
        if entry is not None and request.may_read:  # not fresh (`answer` took those): stale?
            age = entry.age(now)
            fits = request.max_age_s is None or age <= request.max_age_s
            if fits and entry.in_stale_window(now):
                self._refresh_in_background(key, policy, run)
                return self._answered(Answer(entry, "stale", age, stored=True))
        if request.only_if_cached:
            raise NotCached("no cached result for this request (Cache-Control: only-if-cached)")
        usable = entry if entry is not None and entry.age(now) < self.stale_if_error_s else None
        if not request.may_read:
            usable = None
        stale = await self._unless_running(usable, deadline)
        if stale is not None:
            return self._answered(stale)
        store = caching and not request.no_store
        try:
            answer = await self._run(key, policy, store, run, deadline, statement_id, live)
            if isinstance(answer, LiveResult):
                self._observe(answer.status)
                return answer
            return self._answered(answer)
        except (WarehouseUnavailable, StatementTimedOut, WarehouseNotRunning) as exc:
            if not isinstance(exc, WarehouseNotRunning):
                self.tracker.doubt()
            if usable is None:
                raise
            log.warning("warehouse failed (%s): answering a stale result", type(exc).__name__)
            return self._answered(Answer(usable, "stale", usable.age(self.clock()), stored=True))

    async def body_in(
        self, key: str, answer: Answer, form: str, make: Callable[[CacheEntry], bytes]
    ) -> bytes:
        """The answer's body in another format (`make` writes it from the JSON one): made
        once per stored entry and kept beside it in the shared state, made afresh for an
        answer that was not stored. Large bodies are made off the loop."""
        entry = answer.entry
        stored = answer.stored and entry.ttl_s > 0
        if stored:
            kept = await self.state.get_derived(key, entry.etag, form)
            if kept is not None:
                return kept
        if len(entry.body) >= THREAD_MAKE_BYTES:
            body = await asyncio.to_thread(make, entry)
        else:
            body = make(entry)
        if stored:
            keep_s = max(entry.ttl_s + entry.stale_s, self.stale_if_error_s)
            keep_s -= entry.age(self.clock())
            await self.state.put_derived(key, entry.etag, form, body, keep_s)
        return body

    async def drain(self) -> None:
        """Cancel background refreshes (at shutdown)."""
        for task in list(self._refreshes):
            task.cancel()
        if self._refreshes:
            await asyncio.gather(*self._refreshes, return_exceptions=True)

    # -- the parts -------------------------------------------------------------------------

    def _answered(self, answer: Answer) -> Answer:
        self._observe(answer.status)
        return answer

    def _observe(self, status: str) -> None:
        if self.observer is not None:
            self.observer.cache_answered(status)

    async def _unless_running(self, usable: CacheEntry | None, deadline: float) -> Answer | None:
        """None when the request may run now (after waiting for a start, if it had time);
        a stale answer when the warehouse is not up and an entry can answer; raises when
        neither."""
        if not self.tracker.doubted:
            return None
        status = await self.tracker.status()
        if status.state not in _NOT_RUNNING:  # RUNNING, or unreadable: let it run
            return None
        status = await self.tracker.ensure_started(status)
        if usable is not None:
            return Answer(usable, "stale", usable.age(self.clock()), True, warehouse=status)
        self._refuse_unless_time_for(status, deadline)
        status = await self.tracker.wait_running(deadline - self.clock() - RUN_MARGIN_S)
        if status.state in _NOT_RUNNING:
            raise WarehouseStarting("the warehouse is still starting", status)
        return None

    def _refuse_unless_time_for(self, status: WarehouseStatus, deadline: float) -> None:
        if status.state == WarehouseState.STOPPED and not self.tracker.auto_start:
            raise WarehouseStopped(
                "the warehouse is stopped and WAREHOUSE_AUTO_START is off", status
            )
        remaining = deadline - self.clock() - RUN_MARGIN_S
        if status.eta_s is None or remaining < status.eta_s:
            raise WarehouseStarting("the warehouse is starting; retry after its ETA", status)

    async def _run(
        self,
        key: str,
        policy: CachePolicy,
        store: bool,
        run: Run,
        deadline: float,
        statement_id: Callable[[], str | None],
        live: LiveResult[Any] | None = None,
    ) -> Answer | LiveResult[Any]:
        """Join the flight of identical requests (or lead one); a flight whose result this
        request cannot use is followed by another, and the last is the request's alone."""
        for attempt in range(FLIGHTS_PER_REQUEST):
            alone = attempt == FLIGHTS_PER_REQUEST - 1
            flight_key = f"{key}:alone:{secrets.token_hex(8)}" if alone else key
            outcome = await self._fly(
                key, flight_key, policy, store, run, deadline, statement_id, live
            )
            if outcome is not None:
                return outcome
        raise WarehouseError("identical statements gave no result to answer with")

    async def _fly(
        self,
        key: str,
        flight_key: str,
        policy: CachePolicy,
        store: bool,
        run: Run,
        deadline: float,
        statement_id: Callable[[], str | None],
        live: LiveResult[Any] | None,
    ) -> Answer | LiveResult[Any] | None:
        mine: list[Produced] = []
        ran: list[bool] = []

        async def produce() -> CacheEntry | None:
            ran.append(True)
            produced = await run()
            self.tracker.confirm_running()
            if produced is None:
                return None  # a stream too large to share: its own request has streamed it
            mine.append(produced)
            entry = CacheEntry(
                produced.body,
                produced.etag,
                self.clock(),
                policy.ttl_s,
                policy.stale_s,
                produced.row_count,
                produced.statement_id,
                produced.truncated,
            )
            if store and produced.storable:
                keep_s = max(policy.ttl_s + policy.stale_s, self.stale_if_error_s)
                stored = await self.state.put_entry(key, entry, keep_s)
                entry = replace(entry, ttl_s=policy.ttl_s if stored else 0.0)
            else:
                entry = replace(entry, ttl_s=0.0)
            return entry

        # Each waiter keeps its own deadline here; leaving cancels its place in the flight.
        flight = asyncio.get_running_loop().create_task(self.coalescer.run(flight_key, produce))
        watched: set[asyncio.Future[Any]] = {flight}
        if live is not None:
            watched.add(live.began)
        try:
            await self._wait(watched, flight, deadline)
            if live is not None and live.began.done() and live.began.exception() is None:
                # This request runs the statement: it streams the rows, and stays a waiter
                # of the flight until it closes the live result.
                live.place = flight
                live.status = "miss" if store else "bypass"
                return live
            await self._wait({flight}, flight, deadline)  # a failed start ends the flight too
            shared = flight.result()
        except TimeoutError:
            raise StatementTimedOut(
                "the query did not finish within its timeout; it was cancelled on the "
                "warehouse unless identical requests still wait for it",
                statement_id=statement_id(),
            ) from None
        finally:
            if not flight.done() and (live is None or live.place is not flight):
                flight.cancel()  # this request leaves: the statement stops if nobody else waits
        entry = shared.entry
        if entry is None and ran:
            # Its own run was a stream too large to keep, which nobody read (a refresh).
            raise WarehouseError("the statement's result was too large to keep")
        if entry is None or (live is not None and entry.truncated):
            return None  # nothing this request can answer with: it runs its own
        stored = entry.ttl_s > 0
        if shared.coalesced:
            status: CacheStatus = "coalesced"
        elif store:
            status = "miss"
        else:
            status = "bypass"
        produced = mine[0] if mine and not shared.coalesced else None
        fresh_for = int(entry.remaining_s(self.clock())) if stored else 0
        return Answer(entry, status, 0.0, stored, produced=produced, fresh_for_s=fresh_for)

    async def _wait(
        self, watched: set[asyncio.Future[Any]], flight: asyncio.Task[Any], deadline: float
    ) -> None:
        """Until one of `watched` is done; TimeoutError at the deadline. A statement still
        unfinished after a second makes the warehouse's state worth a look."""
        remaining = max(0.0, deadline - self.clock())
        first = asyncio.FIRST_COMPLETED
        done, _ = await asyncio.wait(
            watched, timeout=min(PENDING_DOUBT_S, remaining), return_when=first
        )
        if done:
            return
        await self._check_while_pending(flight, deadline)
        remaining = max(0.0, deadline - self.clock())
        done, _ = await asyncio.wait(watched, timeout=remaining, return_when=first)
        if not done:
            raise TimeoutError

    async def _check_while_pending(self, flight: asyncio.Task[object], deadline: float) -> None:
        """A slow statement may wait for a warehouse that is starting: when its deadline
        cannot cover the start, leave now (the statement is cancelled if nobody else waits)."""
        self.tracker.doubt()
        status = await self.tracker.status()
        if flight.done() or status.state not in _NOT_RUNNING:
            return
        self._refuse_unless_time_for(status, deadline)

    def _refresh_in_background(self, key: str, policy: CachePolicy, run: Run) -> None:
        """One refresh per key at a time; it outlives the request that started it."""
        if self.coalescer.in_flight(key):
            return

        async def refresh() -> None:
            try:
                deadline = self.clock() + self.flight_timeout_s
                await self._run(key, policy, True, run, deadline, lambda: None)  # nobody streams
            except (WarehouseError, TimeoutError) as exc:
                log.warning("background refresh of a stale result failed: %s", type(exc).__name__)
            else:
                if self.observer is not None:
                    self.observer.cache_refreshed()

        task = self.tasks.spawn(refresh())
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)


def warehouse_note(status: WarehouseStatus) -> str:
    """A short, safe description of the warehouse's state for `Server-Timing`."""
    eta = "" if status.eta_s is None else f", eta {round(status.eta_s)}s"
    return f"{status.state.lower()}{eta}"
