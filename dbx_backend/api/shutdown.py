"""Requests at shutdown: each is tracked in `InFlight`, and one that shutdown interrupts
answers `503 SHUTTING_DOWN` (a stream already started ends with that error line, or is cut for
CSV). Cancelling a request is what cancels its statement: the engine sends that one cancel, as
it does when a client leaves.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from dbx_backend.api.errors import ShuttingDown
from dbx_backend.inflight import InFlight
from dbx_backend.keys import IN_FLIGHT

SHUTTING_DOWN_MESSAGE = (
    "the service is shutting down: the request was stopped and its statement, if any, cancelled"
)


def take_interrupt(request: web.Request) -> bool:
    """For a handler catching `CancelledError`: True when shutdown interrupted this request."""
    task = asyncio.current_task()
    return task is not None and request.app[IN_FLIGHT].take_interrupt(task)


def shutdown_middleware(in_flight: InFlight) -> Middleware:
    """Track each request; one that shutdown interrupts raises ShuttingDown (503)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        task = asyncio.current_task()
        if in_flight.closed or task is None:
            raise ShuttingDown(SHUTTING_DOWN_MESSAGE)
        in_flight.enter(task)
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if in_flight.take_interrupt(task):
                raise ShuttingDown(SHUTTING_DOWN_MESSAGE) from None
            raise
        finally:
            in_flight.leave(task)

    return middleware
