"""Readiness: whether the warehouse answers a cheap statement, remembered for a few seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dbx_backend.engine.query_service import QueryOptions, QueryService
from dbx_backend.warehouse.errors import WarehouseError

READY_TIMEOUT_S = 10.0
READY_CACHE_S = 5.0


class NotReady(Exception):
    """The warehouse did not answer the readiness probe."""

    retry_after = READY_CACHE_S


@dataclass(slots=True)
class Readiness:
    """Whether the warehouse answers a cheap statement, remembered for a few seconds."""

    clock: Callable[[], float] = time.monotonic
    checked_at: float = float("-inf")
    ready: bool = False
    reason: str = ""
    # One probe at a time: concurrent checks wait for it instead of running their own.
    _probing: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def check(self, service: QueryService) -> None:
        """Probe the warehouse unless a recent answer is known; raise NotReady when it failed."""
        if self.clock() - self.checked_at >= READY_CACHE_S:
            async with self._probing:
                if self.clock() - self.checked_at >= READY_CACHE_S:
                    await self._probe(service)
        if not self.ready:
            raise NotReady(f"the warehouse does not answer ({self.reason})")

    async def _probe(self, service: QueryService) -> None:
        try:
            await service.execute_query("SELECT 1", options=QueryOptions(timeout_s=READY_TIMEOUT_S))
        except WarehouseError as exc:
            self.ready, self.reason = False, type(exc).__name__
        else:
            self.ready, self.reason = True, ""
        self.checked_at = self.clock()
