"""The open-statements budget: how many `/api/statements` submits one caller may have running.

A caller is an API key (or the whole process when no keys are set). A submit takes a slot
before the warehouse sees it and keeps it while the statement may still run; the slot is given
back when the service learns that the statement ended: a poll that sees a final state, a cancel,
or a background check of entries nobody asked about for a while (bounded in count and time per
round), so an abandoned statement does not hold a slot forever. Kept in this process's memory:
with several replicas each one counts its own submits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger("dbx_backend.api")

# Answers the background check can get for a statement: its state, or None when the warehouse
# no longer knows it (purged: it ended long ago).
StateOf = Callable[[str], Awaitable[str | None]]
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"})


class TooManyStatements(Exception):
    """The caller already has `MAX_OPEN_STATEMENTS` statements open."""

    retry_after = 5.0


@dataclass(frozen=True, slots=True)
class CheckPolicy:
    """How the background check looks for statements that ended without anyone polling them."""

    interval_s: float = 30.0  # between rounds
    idle_s: float = 60.0  # a statement nobody asked about for this long is looked up
    max_lookups: int = 20  # per round, oldest first
    lookup_timeout_s: float = 10.0  # per lookup


@dataclass(slots=True)
class _Entry:
    opened: float
    seen: float  # last time anyone learned it is still running


class OpenStatements:
    """Per-caller counts of statements that may still run, with reservations for submits."""

    def __init__(
        self,
        limit: int,
        *,
        max_age_s: float,
        policy: CheckPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        # After this long a statement's handle has expired: nobody can poll or cancel it.
        self.max_age_s = max_age_s
        self.policy = policy or CheckPolicy()
        self.clock = clock
        self._open: dict[str, dict[str, _Entry]] = {}
        self._reserved: dict[str, int] = {}

    def count(self, caller: str) -> int:
        """Slots `caller` holds: open statements and submits in progress."""
        return len(self._open.get(caller, {})) + self._reserved.get(caller, 0)

    @contextmanager
    def reserve(self, caller: str) -> Iterator[Callable[[str], None]]:
        """Hold a slot for one submit, or raise TooManyStatements before anything is sent.

        Yields `keep(statement_id)`: call it when the statement may still run, so the slot
        stays taken after the submit; otherwise the slot is given back on exit.
        """
        if self.count(caller) >= self.limit:
            raise TooManyStatements(
                f"{self.limit} statements are already open for this caller "
                "(MAX_OPEN_STATEMENTS): poll one to its end or cancel one "
                "(DELETE /api/statements/{id}), then submit again"
            )
        self._reserved[caller] = self._reserved.get(caller, 0) + 1

        def keep(statement_id: str) -> None:
            now = self.clock()
            self._open.setdefault(caller, {})[statement_id] = _Entry(now, now)

        try:
            yield keep
        finally:
            self._reserved[caller] -= 1
            if not self._reserved[caller]:
                del self._reserved[caller]

    def observe(self, caller: str, statement_id: str, state: str | None) -> None:
        """What a poll or cancel learned: a final state (or None: gone) gives the slot back."""
        statements = self._open.get(caller)
        if statements is None or statement_id not in statements:
            return
        if state is None or state in FINAL_STATES:
            del statements[statement_id]
            if not statements:
                del self._open[caller]
        else:
            statements[statement_id].seen = self.clock()

    def release(self, caller: str, statement_id: str) -> None:
        """Give the slot back: the statement ended, or the caller cancelled it."""
        self.observe(caller, statement_id, None)

    async def check_once(self, state_of: StateOf) -> int:
        """One round of the background check; returns how many slots it gave back."""
        now = self.clock()
        released = 0
        idle: list[tuple[float, str, str]] = []
        for caller, statements in list(self._open.items()):
            for statement_id, entry in list(statements.items()):
                if now - entry.opened >= self.max_age_s:
                    self.release(caller, statement_id)  # its handle expired with it
                    released += 1
                elif now - entry.seen >= self.policy.idle_s:
                    idle.append((entry.seen, caller, statement_id))
        for _, caller, statement_id in sorted(idle)[: self.policy.max_lookups]:
            try:
                async with asyncio.timeout(self.policy.lookup_timeout_s):
                    state = await state_of(statement_id)
            except Exception as exc:  # the warehouse may be down: keep the slot, ask later
                log.info("open statement %s not checked: %s", statement_id, type(exc).__name__)
                continue
            before = self.count(caller)
            self.observe(caller, statement_id, state)
            released += before - self.count(caller)
        return released

    async def run_checks(self, state_of: StateOf) -> None:
        """Check every `interval_s` until cancelled (the app's cleanup does that)."""
        while True:
            await asyncio.sleep(self.policy.interval_s)
            released = await self.check_once(state_of)
            if released:
                log.info("background check: %d open statement(s) had ended", released)
