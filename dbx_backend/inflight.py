"""Requests in flight at shutdown: counted, waited for, then interrupted.

`serving.py` stops listening, waits up to `SHUTDOWN_GRACE_S` for `InFlight` to empty, then
calls `interrupt()`: each request still running is cancelled (the API answers it 503).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class IdleListener(Protocol):
    """Told when the service goes from no request to one (`busy`) and back (`idle`)."""

    def busy(self) -> None: ...

    def idle(self) -> None: ...


class InFlight:
    """The tasks of the requests being handled, and which of them shutdown interrupted."""

    def __init__(self, listener: IdleListener | None = None) -> None:
        self._listener = listener
        self._tasks: set[asyncio.Task[Any]] = set()
        self._interrupted: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False  # after interrupt(): late requests are refused at once

    def __len__(self) -> int:
        return len(self._tasks)

    def enter(self, task: asyncio.Task[Any]) -> None:
        """A request starts."""
        if not self._tasks and self._listener is not None:
            self._listener.busy()
        self._tasks.add(task)
        self._idle.clear()

    def leave(self, task: asyncio.Task[Any]) -> None:
        """A request ends; a shutdown cancel its handler swallowed is taken back."""
        self._tasks.discard(task)
        if task in self._interrupted:
            self._interrupted.discard(task)
            task.uncancel()
        if not self._tasks:
            self._idle.set()
            if self._listener is not None:
                self._listener.idle()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every request to end; True if they did."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def interrupt(self) -> int:
        """Cancel every request still running (each answers 503); how many there were."""
        self.closed = True
        for task in self._tasks - self._interrupted:
            self._interrupted.add(task)
            task.cancel()
        return len(self._tasks)

    def take_interrupt(self, task: asyncio.Task[Any]) -> bool:
        """True when the cancellation `task` is handling came from `interrupt()` alone; the
        cancel is then taken back, so the handler may answer instead of dying."""
        if task not in self._interrupted:
            return False
        self._interrupted.discard(task)
        return task.uncancel() == 0
