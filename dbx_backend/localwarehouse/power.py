"""The warehouse's own state, as the SQL Warehouses API reports it: cold starts and auto-stop.

STOPPED -> STARTING -> RUNNING -> STOPPING -> STOPPED. A statement submitted while the
warehouse is not RUNNING starts it, as Databricks does, and stays PENDING until it is RUNNING.
An idle RUNNING warehouse (no statement PENDING or RUNNING) stops after `auto_stop_s`.

Transitions are worked out from the clock whenever the state is looked at (every request
does), so a test's fake clock drives them as well as real time; a timer wakes the statements
queued behind a start when nobody is looking.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dbx_backend.localwarehouse.config import WarehouseConfig
from dbx_backend.localwarehouse.engine import Engine, Statement
from dbx_backend.localwarehouse.errors import ApiError

log = logging.getLogger(__name__)

STOPPED, STARTING, RUNNING, STOPPING = "STOPPED", "STARTING", "RUNNING", "STOPPING"
_MIN_TIMER_S = 0.001


class Power:
    """Whether the warehouse is up, and the statements waiting for it to be."""

    def __init__(
        self,
        config: WarehouseConfig,
        engine: Engine,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._engine = engine
        self._loop = loop
        self._clock = clock
        self._state = STOPPED if config.start_stopped else RUNNING
        self._since = clock()
        self._queued: list[Statement] = []
        self._timer: asyncio.TimerHandle | None = None
        self.starts = 0  # STOPPED -> STARTING transitions, for tests and the log

    @property
    def state(self) -> str:
        """The current state, after any transition that is due."""
        self.refresh()
        return self._state

    def refresh(self) -> None:
        """Apply the transitions the clock says are due (start done, stop done, idle)."""
        now = self._clock()
        for _ in range(4):  # at most one full cycle per look
            if self._state == STARTING and now - self._since >= self._config.start_s:
                self._enter(RUNNING, self._since + self._config.start_s)
            elif self._state == STOPPING and now - self._since >= self._config.stop_s:
                self._enter(STOPPED, self._since + self._config.stop_s)
                if self._queued:  # statements arrived while it stopped: they start it again
                    self._begin_start(now)
            elif self._state == RUNNING and self._idle_since(now) is not None:
                idle_since = self._idle_since(now)
                assert idle_since is not None  # noqa: S101 - checked on the line above
                self._begin_stop(idle_since + self._config.auto_stop_s)
            else:
                break
        self._arm_timer(now)

    def run(self, statement: Statement) -> None:
        """Execute the statement now if RUNNING; otherwise start the warehouse and queue it."""
        self.refresh()
        if self._state == RUNNING:
            self._engine.start(statement)
            return
        self._queued.append(statement)
        if self._state == STOPPED:
            self._begin_start(self._clock())
        self._arm_timer(self._clock())

    def start(self) -> None:
        """The Warehouses API `start`: STOPPED begins STARTING; STARTING/RUNNING are left be."""
        self.refresh()
        if self._state == STOPPING:
            # Databricks may reject a start while stopping (reference §1.2, unconfirmed): we do,
            # so clients learn to wait for STOPPED.
            raise ApiError(
                400,
                "INVALID_STATE",
                f"Warehouse {self._config.warehouse_id} is stopping; start it once it has stopped.",
            )
        if self._state == STOPPED:
            self._begin_start(self._clock())
            self._arm_timer(self._clock())

    def stop(self, *, at_once: bool = False) -> None:
        """The Warehouses API `stop` (or the admin's, `at_once`): statements are cancelled."""
        self.refresh()
        if self._state in (STOPPED, STOPPING) and not at_once:
            return
        for statement in self._queued:
            self._engine.cancel(statement)
        self._queued.clear()
        for statement in self._engine.active_statements():
            self._engine.cancel(statement)
        if at_once:
            self._enter(STOPPED, self._clock())
        else:
            self._begin_stop(self._clock())
        self.refresh()

    def starting_for_s(self) -> float | None:
        """Seconds since the current start began, while STARTING."""
        return self._clock() - self._since if self.state == STARTING else None

    def close(self) -> None:
        """Forget the timer (the engine cancels the statements)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queued.clear()

    def _idle_since(self, now: float) -> float | None:
        """When the warehouse became idle, if it has been idle for `auto_stop_s` by `now`."""
        if self._config.auto_stop_s <= 0 or self._engine.active_count() > 0:
            return None
        idle_since = max(self._since, self._engine.last_activity)
        return idle_since if now - idle_since >= self._config.auto_stop_s else None

    def _begin_start(self, now: float) -> None:
        self.starts += 1
        log.info("local warehouse %s starting", self._config.warehouse_id)
        self._enter(STARTING, now)
        if self._config.start_s <= 0:
            self._enter(RUNNING, now)

    def _begin_stop(self, at: float) -> None:
        log.info("local warehouse %s stopping", self._config.warehouse_id)
        self._enter(STOPPING, at)
        if self._config.stop_s <= 0:
            self._enter(STOPPED, at)

    def _enter(self, state: str, at: float) -> None:
        self._state, self._since = state, at
        if state == RUNNING:
            log.info("local warehouse %s running", self._config.warehouse_id)
            queued, self._queued = self._queued, []
            for statement in queued:
                self._engine.start(statement)

    def _arm_timer(self, now: float) -> None:
        """Wake up when a start or stop is due while statements wait for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._state == STARTING:
            due = self._since + self._config.start_s - now
        elif self._state == STOPPING and self._queued:
            due = self._since + self._config.stop_s - now
        else:
            return
        self._timer = self._loop.call_later(max(due, _MIN_TIMER_S), self.refresh)
