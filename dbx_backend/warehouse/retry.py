"""When to retry a warehouse call, and how long to wait: a policy value and pure decisions.

`backoff` only drives these (see `client.py`); the maths stays here, unit-tested, with no clock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from dbx_backend.warehouse.errors import (
    ConnectFailed,
    RateLimited,
    ServerError,
    TokenUnavailable,
    WarehouseError,
    WarehouseRejected,
    WarehouseUnavailable,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and total time."""

    attempts: int = 5
    total_s: float = 60.0
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 60.0

    def delay(
        self,
        retry_number: int,
        exc: BaseException | None,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> float:
        """Seconds before retry `retry_number` (0-based).

        A server's integer `Retry-After` is honoured as given (capped, never jittered or
        inflated); otherwise full jitter over an exponentially growing window.
        """
        if isinstance(exc, WarehouseError) and exc.retry_after is not None:
            return max(0.0, min(exc.retry_after, self.max_retry_after_s))
        window = min(self.max_delay_s, self.initial_delay_s * 2**retry_number)
        return uniform(0.0, window)


NO_WAIT = RetryPolicy(initial_delay_s=0.0, max_delay_s=0.0, max_retry_after_s=0.0)


def should_retry(exc: BaseException, *, idempotent: bool) -> bool:
    """True when a repeat cannot run a statement twice and may succeed."""
    if not isinstance(exc, WarehouseUnavailable):
        return False
    if idempotent or isinstance(exc, ConnectFailed):
        return True
    # POST /statements is not idempotent: retry only answers that prove it did not run
    # (429, 503), never a 500 or a lost response (reference §8.5).
    return isinstance(exc, RateLimited) or (isinstance(exc, ServerError) and exc.status == 503)


def never_ran(exc: BaseException) -> bool:
    """True when a failed submit proves no statement was started: the warehouse refused it
    (4xx), throttled it or was unavailable (429, 503), no connection was made, or no token was
    had to send it with. A 500 or a lost response proves nothing (reference §8.5)."""
    return isinstance(exc, (WarehouseRejected, TokenUnavailable)) or should_retry(
        exc, idempotent=False
    )


def delays(policy: RetryPolicy) -> Generator[float, BaseException | None, None]:
    """A `backoff` wait generator: backoff sends each failure in, we yield the next delay."""
    exc = yield 0.0  # primed by backoff with None; this value is discarded
    retry_number = 0
    while True:
        exc = yield policy.delay(retry_number, exc)
        retry_number += 1


@dataclass(slots=True)
class Deadline:
    """One query's time budget on a monotonic clock: submit, queueing, polling and fetching."""

    timeout_s: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.timeout_s - (self.clock() - self.started))

    @property
    def expired(self) -> bool:
        """True once no time is left."""
        return self.remaining() <= 0.0
