"""Scripted faults per endpoint, for reliability tests: errors, throttling, drops, delays.

Faults are deterministic: each endpoint has a queue of scripted faults consumed in order by
the requests that reach it, so a test states exactly which call fails and how.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

ENDPOINTS = frozenset(
    {
        "execute",
        "get_statement",
        "get_chunk",
        "cancel",
        "download",
        "token",
        "warehouse_get",
        "warehouse_start",
        "warehouse_stop",
    }
)

# The error_code a real gateway or service pairs with each status (reference §8.2).
_DEFAULT_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_MESSAGES = {
    429: "Too many requests. Please retry later.",
    503: "The service is temporarily unavailable. Please retry later.",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One misbehaviour; build it with `status`, `body`, `drop` or `delay`."""

    kind: str
    status_code: int = 0
    retry_after: int | None = None
    error_code: str | None = None
    message: str | None = None
    text: str = ""
    content_type: str = "application/json"
    delay_s: float = 0.0
    after_handler: bool = False

    @classmethod
    def status(
        cls,
        status: int,
        *,
        retry_after: int | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> Fault:
        """An error answer with the standard JSON body and, if given, `Retry-After`."""
        return cls(
            "status",
            status_code=status,
            retry_after=retry_after,
            error_code=error_code or _DEFAULT_CODES.get(status, "UNKNOWN"),
            message=message or _DEFAULT_MESSAGES.get(status, f"Injected failure ({status})"),
        )

    @classmethod
    def body(
        cls,
        status: int,
        text: str,
        *,
        content_type: str = "text/plain",
        retry_after: int | None = None,
    ) -> Fault:
        """An answer with a raw body: empty, `CODE: message`, an HTML error page, ..."""
        return cls(
            "body",
            status_code=status,
            text=text,
            content_type=content_type,
            retry_after=retry_after,
        )

    @classmethod
    def drop(cls, *, after_handler: bool = False) -> Fault:
        """Close the connection without an answer; `after_handler`: after doing the work."""
        return cls("drop", after_handler=after_handler)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally, but only after `seconds`."""
        return cls("delay", delay_s=seconds)

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """A fault from its admin-route JSON form, e.g. `{"kind": "status", "status": 503}`."""
        if not isinstance(data, dict):
            raise TypeError("fault must be an object")
        kind = data.get("kind")
        if kind == "status":
            return cls.status(
                int(data["status"]),
                retry_after=_optional_int(data.get("retry_after")),
                error_code=data.get("error_code"),
                message=data.get("message"),
            )
        if kind == "body":
            return cls.body(
                int(data["status"]),
                str(data.get("body", "")),
                content_type=str(data.get("content_type", "text/plain")),
                retry_after=_optional_int(data.get("retry_after")),
            )
        if kind == "drop":
            return cls.drop(after_handler=bool(data.get("after_handler", False)))
        if kind == "delay":
            return cls.delay(float(data["seconds"]))
        raise ValueError("kind must be one of status, body, drop, delay")


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(slots=True)
class _Scripted:
    fault: Fault
    times_left: int | None  # None: forever
    skip_left: int = 0


@dataclass
class FaultInjector:
    """Per-endpoint queues of scripted faults, consumed by the requests that arrive."""

    _queues: dict[str, deque[_Scripted]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, endpoint: str, fault: Fault, *, times: int | None = 1, after: int = 0) -> None:
        """Apply `fault` to the next `times` requests (None: all) of `endpoint`, after letting
        `after` requests through; faults added to one endpoint apply in order."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(ENDPOINTS)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for every request")
        with self._lock:
            self._queues.setdefault(endpoint, deque()).append(_Scripted(fault, times, after))

    def clear(self, endpoint: str | None = None) -> None:
        """Forget the scripted faults of one endpoint, or of all."""
        with self._lock:
            if endpoint is None:
                self._queues.clear()
            else:
                self._queues.pop(endpoint, None)

    def pending(self, endpoint: str) -> int:
        """How many scripted faults of `endpoint` are still waiting (forever counts as one)."""
        with self._lock:
            return sum(s.times_left or 1 for s in self._queues.get(endpoint, ()))

    def take(self, endpoint: str) -> Fault | None:
        """The fault for this request of `endpoint`, if one is due."""
        with self._lock:
            queue = self._queues.get(endpoint)
            if not queue:
                return None
            head = queue[0]
            if head.skip_left > 0:
                head.skip_left -= 1
                return None
            if head.times_left is not None:
                head.times_left -= 1
                if head.times_left == 0:
                    queue.popleft()
            return head.fault
