"""The concurrency limit: at most `MAX_CONCURRENT_QUERIES` statements in flight per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class TooManyQueries(Exception):
    """This process already runs `MAX_CONCURRENT_QUERIES` statements."""

    retry_after = 1.0


class QueryLimiter:
    """At most `limit` statements in flight in this process; over it, refuse at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of a query, or raise TooManyQueries."""
        if self.in_flight >= self.limit:
            raise TooManyQueries(
                f"this service already runs {self.limit} queries; try again shortly"
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
