"""Readiness: whether the warehouse can take statements, checked in the background.

The check reads the warehouse's state through the SQL Warehouses API, which costs nothing on
the warehouse: it neither starts a stopped warehouse nor keeps a running one from stopping
when idle (a statement every few seconds would do both, and bill warehouse time). RUNNING is
ready. While it is stopped or starting the service is still ready (it answers from the cache,
starts the warehouse and tells callers when it will be up), unless WAREHOUSE_AUTO_START is off
and it is stopped, or it is deleted. Only when the Warehouses API refuses this identity does
the check fall back to running `SELECT 1`, and then only while the state is unknown.

`/ready` never waits on the warehouse for long: it starts a check when the last one is stale,
waits a moment for it, then reports the last known result and its age. One check runs at a
time, in a task of the process's `TaskOwner`, cancelled on `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from dbx_backend.engine.gate import PROBE
from dbx_backend.engine.query_service import QueryOptions, QueryService
from dbx_backend.engine.tasks import TaskOwner
from dbx_backend.engine.warehouse_state import UNKNOWN, WarehouseStatus, WarehouseTracker
from dbx_backend.warehouse.wire import WarehouseState

log = logging.getLogger("dbx_backend.readiness")

READY_TIMEOUT_S = 10.0  # one check, submit to result
READY_CACHE_S = 5.0  # a result this recent is reported without a new check
READY_WAIT_S = 0.5  # how long /ready waits for a check in flight: well under a prober's 1 s


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """The last known result: `checked_at` (wall time) is None before the first check ends."""

    ready: bool
    reason: str
    checked_at: float | None
    age_s: float | None
    warehouse: WarehouseStatus | None = None

    def to_json(self) -> dict[str, object]:
        """The fields `/ready` answers with."""
        checked_at = None
        if self.checked_at is not None:
            when = datetime.fromtimestamp(self.checked_at, UTC)
            checked_at = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "status": "ready" if self.ready else "not_ready",
            "checked_at": checked_at,
            "age_s": None if self.age_s is None else round(self.age_s, 3),
            "warehouse": {
                "state": self.warehouse.state if self.warehouse else UNKNOWN,
                "eta_s": self.warehouse.to_json()["eta_s"] if self.warehouse else None,
            },
        }


class NotReady(Exception):
    """The warehouse did not answer the last readiness check (or none has ended yet)."""

    retry_after = READY_CACHE_S

    def __init__(self, report: ReadinessReport) -> None:
        super().__init__(report.reason)
        self.report = report


class Readiness:
    """The last readiness result, refreshed by one background check at a time."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        timeout_s: float = READY_TIMEOUT_S,
        cache_s: float = READY_CACHE_S,
        wait_s: float = READY_WAIT_S,
        tasks: TaskOwner | None = None,
    ) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self.wait_s = wait_s
        self.tasks = tasks if tasks is not None else TaskOwner()
        self._ready = False
        self._reason = "the first readiness check has not finished yet"
        self._checked: tuple[float, float] | None = None  # (monotonic, wall) when it ended
        self._check: asyncio.Task[None] | None = None
        self._warehouse: WarehouseStatus | None = None

    async def report(
        self, service: QueryService, tracker: WarehouseTracker | None = None
    ) -> ReadinessReport:
        """Start a check if the last result is stale, wait up to `wait_s` for it, report."""
        stale = self._checked is None or self.clock() - self._checked[0] >= self.cache_s
        if stale and (self._check is None or self._check.done()):
            self._check = self.tasks.spawn(self._run_check(service, tracker))
        if self._check is not None and not self._check.done():
            await asyncio.wait({self._check}, timeout=self.wait_s)  # never cancels the check
        return self._last()

    async def close(self) -> None:
        """Cancel a check in flight (at shutdown)."""
        if self._check is not None and not self._check.done():
            self._check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check

    def _last(self) -> ReadinessReport:
        if self._checked is None:
            return ReadinessReport(self._ready, self._reason, None, None, self._warehouse)
        ended, wall = self._checked
        age = max(0.0, self.clock() - ended)
        return ReadinessReport(self._ready, self._reason, wall, age, self._warehouse)

    async def _run_check(self, service: QueryService, tracker: WarehouseTracker | None) -> None:
        ready, reason = await self._judge(service, tracker)
        if ready != self._ready or self._checked is None:
            level = logging.INFO if ready else logging.WARNING
            log.log(level, "readiness: %s", "ready" if ready else reason)
        self._ready, self._reason = ready, reason
        self._checked = (self.clock(), self.wall_clock())

    async def _judge(
        self, service: QueryService, tracker: WarehouseTracker | None
    ) -> tuple[bool, str]:
        if tracker is None:
            return await self._probe(service)
        try:
            async with asyncio.timeout(self.timeout_s):
                status = await tracker.status()
        except TimeoutError:
            self._warehouse = None
            return False, "the warehouse's state could not be read (TimeoutError)"
        self._warehouse = status
        state = status.state
        if state == WarehouseState.RUNNING:
            return True, ""
        if state == UNKNOWN:
            if status.refused:
                # The Warehouses API is not ours to read: only a statement can tell.
                return await self._probe(service)
            return False, f"the warehouse's state could not be read ({status.unreadable})"
        if state == WarehouseState.STOPPED and not tracker.auto_start:
            return False, "the warehouse is STOPPED and WAREHOUSE_AUTO_START is off"
        if state in (WarehouseState.DELETING, WarehouseState.DELETED):
            return False, f"the warehouse is {state}"
        # STOPPED (it will be started), STARTING, STOPPING (started once stopped), and states
        # the API may add later: requests are answered meanwhile.
        return True, ""

    async def _probe(self, service: QueryService) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(self.timeout_s):
                await service.execute_query(PROBE, options=QueryOptions(timeout_s=self.timeout_s))
        except Exception as exc:  # any failure means not ready; the check must not die loudly
            return False, f"the warehouse does not answer ({type(exc).__name__})"
        return True, ""
