"""Readiness: whether the warehouse answers a cheap statement, checked in the background.

`/ready` never waits on the warehouse for long: it starts a check when the last one is stale,
waits a moment for it, then reports the last known result and its age. One check runs at a
time, in a task this object owns and cancels on `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from dbx_backend.engine.query_service import QueryOptions, QueryService

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

    def to_json(self) -> dict[str, str | float | None]:
        """The fields `/ready` answers with."""
        checked_at = None
        if self.checked_at is not None:
            when = datetime.fromtimestamp(self.checked_at, UTC)
            checked_at = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "status": "ready" if self.ready else "not_ready",
            "checked_at": checked_at,
            "age_s": None if self.age_s is None else round(self.age_s, 3),
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
    ) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self.wait_s = wait_s
        self._ready = False
        self._reason = "the first readiness check has not finished yet"
        self._checked: tuple[float, float] | None = None  # (monotonic, wall) when it ended
        self._check: asyncio.Task[None] | None = None

    async def report(self, service: QueryService) -> ReadinessReport:
        """Start a check if the last result is stale, wait up to `wait_s` for it, report."""
        stale = self._checked is None or self.clock() - self._checked[0] >= self.cache_s
        if stale and (self._check is None or self._check.done()):
            self._check = asyncio.get_running_loop().create_task(self._run_check(service))
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
            return ReadinessReport(self._ready, self._reason, None, None)
        ended, wall = self._checked
        return ReadinessReport(self._ready, self._reason, wall, max(0.0, self.clock() - ended))

    async def _run_check(self, service: QueryService) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await service.execute_query(
                    "SELECT 1", options=QueryOptions(timeout_s=self.timeout_s)
                )
        except Exception as exc:  # any failure means not ready; the check must not die loudly
            ready, reason = False, f"the warehouse does not answer ({type(exc).__name__})"
        else:
            ready, reason = True, ""
        if ready != self._ready or self._checked is None:
            level = logging.INFO if ready else logging.WARNING
            log.log(level, "readiness: %s", "ready" if ready else reason)
        self._ready, self._reason = ready, reason
        self._checked = (self.clock(), self.wall_clock())
