"""Whether the warehouse is up, when it will be, and starting it (once) when it is not.

The state is read through the SQL Warehouses API only when there is reason to doubt that the
warehouse is RUNNING (at start, after a statement stays PENDING, after a warehouse error),
remembered a few seconds, and read by one call however many requests ask. A STOPPED warehouse
is started once (a lock in the shared state makes it once across replicas too) and never
while it is STARTING or RUNNING; a STOPPING one is started when it has stopped (the safe start
rule, warehouses reference §1.2). The time a start takes is learnt from the starts this
service saw, kept in the shared state so replicas learn together.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from dbx_backend.engine.shared_state import SharedState
from dbx_backend.warehouse.errors import NotFound, PermissionDenied, Unauthenticated, WarehouseError
from dbx_backend.warehouse.wire import WarehouseInfo, WarehouseState

log = logging.getLogger(__name__)

UNKNOWN = "UNKNOWN"
# A start still going past its expected time: say "soon", never "now".
MIN_ETA_S = 1.0
# Where the start's beginning is remembered; old enough to be meaningless after this.
START_RECORD_TTL_S = 3600.0
# How long one replica's start keeps others from starting: longer than the Warehouses API's
# lag between `start` and a GET that says STARTING (warehouses reference §1.2).
START_LOCK_TTL_S = 30.0
WARN_EVERY_S = 60.0
_WAITING = frozenset({WarehouseState.STOPPED, WarehouseState.STOPPING, WarehouseState.STARTING})


class WarehousesApi(Protocol):
    """The two calls of the SQL Warehouses API the tracker makes (the transport has them)."""

    async def get_warehouse(self) -> WarehouseInfo: ...

    async def start_warehouse(self) -> None: ...


class WarehouseNotRunning(WarehouseError):
    """The warehouse is not RUNNING and the request cannot wait for it."""

    def __init__(self, message: str, status: WarehouseStatus) -> None:
        super().__init__(message, retry_after=status.retry_after_s)
        self.warehouse = status


class WarehouseStarting(WarehouseNotRunning):
    """The warehouse is starting (or stopping, then starting); retry after its ETA."""


class WarehouseStopped(WarehouseNotRunning):
    """The warehouse is stopped and WAREHOUSE_AUTO_START is off."""


@dataclass(frozen=True, slots=True)
class WarehouseStatus:
    """The warehouse's state, and when it is expected to be RUNNING."""

    state: str
    eta_s: float | None = None
    starting_for_s: float | None = None
    # Why the state is UNKNOWN: the error's class name, and whether the Warehouses API refused
    # this identity (401, 403, 404: not ours to read) rather than failing for now.
    unreadable: str | None = None
    refused: bool = False

    @property
    def running(self) -> bool:
        """True when statements run now."""
        return self.state == WarehouseState.RUNNING

    @property
    def retry_after_s(self) -> float | None:
        """Seconds worth waiting before asking again."""
        return None if self.eta_s is None else max(MIN_ETA_S, self.eta_s)

    def to_json(self) -> dict[str, str | float | None]:
        """`{state, eta_s, starting_for_s}` as the API shows it (whole seconds)."""
        return {
            "state": self.state,
            # Never negative: an overdue start is expected now, not in the past.
            "eta_s": None if self.eta_s is None else max(0, round(self.eta_s)),
            "starting_for_s": (
                None if self.starting_for_s is None else max(0, round(self.starting_for_s))
            ),
        }


class WarehouseTracker:
    """The warehouse's state as this service knows it, and the one place that starts it."""

    def __init__(
        self,
        api: WarehousesApi,
        state: SharedState,
        *,
        warehouse_id: str,
        auto_start: bool = True,
        estimate_s: float = 120.0,
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.api = api
        self.state = state
        self.auto_start = auto_start
        self.estimate_s = estimate_s
        self.cache_s = cache_s
        self.clock = clock
        self.sleep = sleep
        self._on_start = on_start
        self._names = f"warehouse:{warehouse_id}"
        self._doubted = True  # at start nothing is known
        self._status: WarehouseStatus | None = None
        self._read_at = float("-inf")
        self._reading: asyncio.Task[WarehouseStatus] | None = None
        self.starts_issued = 0
        self.last_state = UNKNOWN
        self._warned_at = float("-inf")

    # -- what the engine tells the tracker -------------------------------------------------

    @property
    def doubted(self) -> bool:
        """True when the state should be read before trusting the warehouse to run."""
        return self._doubted

    def doubt(self) -> None:
        """Something suggests the warehouse is not RUNNING: read it afresh next time."""
        self._doubted = True
        self._read_at = float("-inf")

    def confirm_running(self) -> None:
        """A statement ran: the warehouse is RUNNING."""
        self._doubted = False
        self.last_state = WarehouseState.RUNNING

    # -- reading the state -----------------------------------------------------------------

    async def status(self, *, max_age_s: float | None = None) -> WarehouseStatus:
        """The state, read at most `max_age_s` (default: a few seconds) ago; one read at a time.

        UNKNOWN when the Warehouses API cannot be read (logged at most once a minute).
        """
        max_age = self.cache_s if max_age_s is None else max_age_s
        if self._status is not None and self.clock() - self._read_at < max_age:
            return self._status
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(self._read())
        return await asyncio.shield(self._reading)

    async def _read(self) -> WarehouseStatus:
        try:
            info = await self.api.get_warehouse()
        except WarehouseError as exc:
            # Unreadable (no permission, API down): statements find out for themselves.
            now = self.clock()
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("the warehouse's state cannot be read: %s", exc)
            refused = isinstance(exc, (Unauthenticated, PermissionDenied, NotFound))
            unknown = WarehouseStatus(UNKNOWN, unreadable=type(exc).__name__, refused=refused)
            self._status, self._read_at, self.last_state = unknown, now, UNKNOWN
            return unknown
        now = self.clock()
        state = info.state
        if state == WarehouseState.RUNNING:
            await self._record_start_end(now)
            self._doubted = False
        elif state == WarehouseState.STARTING:
            # Someone else (or a statement) started it: its length from now is a lower bound.
            await self.state.set_value(
                self._names + ":starting_since",
                f"seen {now!r}",
                START_RECORD_TTL_S,
                only_if_absent=True,
            )
        status = await self._with_eta(state, now)
        self._status, self._read_at, self.last_state = status, now, state
        return status

    async def _record_start_end(self, now: float) -> None:
        record = await self.state.get_value(self._names + ":starting_since")
        if record is None:
            return
        await self.state.delete_value(self._names + ":starting_since")
        kind, _, since = record.partition(" ")
        try:
            began = float(since)
        except ValueError:
            return
        if kind == "exact" and 0 < now - began < START_RECORD_TTL_S:
            await self.state.push_sample(self._names + ":start_s", now - began)

    async def expected_start_s(self) -> float:
        """The median of the starts seen, or WAREHOUSE_START_ESTIMATE_S before any."""
        samples = await self.state.samples(self._names + ":start_s")
        return statistics.median(samples) if samples else self.estimate_s

    async def _with_eta(self, state: str, now: float) -> WarehouseStatus:
        if state == WarehouseState.RUNNING:
            return WarehouseStatus(state, 0.0, None)
        if state in (WarehouseState.DELETING, WarehouseState.DELETED):
            return WarehouseStatus(state, None, None)
        if state == WarehouseState.STOPPED and not self.auto_start:
            return WarehouseStatus(state, None, None)
        expected = await self.expected_start_s()
        if state == WarehouseState.STARTING:
            since = await self._starting_since()
            starting_for = None if since is None else max(0.0, now - since)
            eta = expected - (starting_for or 0.0)
            return WarehouseStatus(state, max(MIN_ETA_S, eta), starting_for)
        return WarehouseStatus(state, expected, None)  # STOPPED or STOPPING: a whole start

    async def _starting_since(self) -> float | None:
        record = await self.state.get_value(self._names + ":starting_since")
        if record is None:
            return None
        try:
            return float(record.partition(" ")[2])
        except ValueError:
            return None

    # -- starting --------------------------------------------------------------------------

    async def ensure_started(self, status: WarehouseStatus) -> WarehouseStatus:
        """Start a STOPPED warehouse when auto-start is on; once, however many ask.

        Never while STARTING or RUNNING; a STOPPING one is left to stop (the next look
        starts it). Returns the state as it is after this.
        """
        if status.state != WarehouseState.STOPPED or not self.auto_start:
            return status
        token = await self.state.acquire(self._names + ":start", START_LOCK_TTL_S)
        now = self.clock()
        expected = await self.expected_start_s()
        if token is None:  # a start was issued moments ago (here or on another replica)
            since = await self._starting_since()
            starting_for = None if since is None else max(0.0, now - since)
            eta = max(MIN_ETA_S, expected - (starting_for or 0.0))
            return WarehouseStatus(WarehouseState.STARTING, eta, starting_for)
        try:
            await self.api.start_warehouse()
        except WarehouseError as exc:
            # A refused start (it may be stopping, or already starting): read the state again.
            log.warning("starting the warehouse failed: %s", exc)
            self.doubt()
            return status
        self.starts_issued += 1
        if self._on_start is not None:
            self._on_start()
        log.info("warehouse was STOPPED: start issued (expected to take %.0f s)", expected)
        await self.state.set_value(
            self._names + ":starting_since", f"exact {now!r}", START_RECORD_TTL_S
        )
        started = WarehouseStatus(WarehouseState.STARTING, expected, 0.0)
        # Trust our own start over a GET that may still say STOPPED for a moment.
        self._status, self._read_at, self.last_state = started, now, WarehouseState.STARTING
        self._doubted = True
        return started

    async def wait_running(self, timeout_s: float, *, poll_s: float = 1.0) -> WarehouseStatus:
        """Wait (starting it if needed) until RUNNING or `timeout_s` passes; the last status.

        Many waiters share one read per `poll_s`.
        """
        deadline = self.clock() + timeout_s
        status = await self.status(max_age_s=poll_s)
        for _ in range(100_000):  # bounded by the deadline, well before this count
            status = await self.ensure_started(status)
            if status.state not in _WAITING:  # RUNNING, or nothing to wait for
                return status
            remaining = deadline - self.clock()
            if remaining <= 0:
                return status
            await self.sleep(min(poll_s, remaining))
            status = await self.status(max_age_s=poll_s)
        return status
