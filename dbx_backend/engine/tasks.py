"""The one owner of the process's background tasks: cancels, detached submits, periodic checks.

Work that must outlive the request that started it is spawned here, so shutdown has one place
to wait for it (`drain`), bounded in time. Endless work (a periodic check) is cancelled by
whoever started it before the drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

# At shutdown, background work gets this long before it is given up.
DRAIN_TIMEOUT_S = 3.0
_T = TypeVar("_T")


class TaskOwner:
    """Tracks every task it spawns until the task ends; `drain` waits for them at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run `work` in a task owned here until it ends (or `drain` gives up on it)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Wait up to `timeout_s` for every task, those spawned meanwhile too; cancel the rest."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout_s  # real time: the process is about to exit
        while self._tasks and (left_s := give_up_at - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left_s)
        left = set(self._tasks)
        if left:
            log.warning(
                "%d cancels did not finish within %g s; their statements run until the "
                "warehouse ends them",
                len(left),
                timeout_s,
            )
            for task in left:
                task.cancel()
            await asyncio.wait(left)
