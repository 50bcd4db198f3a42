"""Serve the app until SIGTERM or SIGINT, then stop within `SHUTDOWN_GRACE_S` + 5 s, exit 0.

The stop, in order: the listening socket closes at once (idle keep-alive connections too);
requests in flight get up to the grace to finish; those still running are interrupted and
answer `503 SHUTTING_DOWN` (their statements are cancelled by the query service, one cancel
each); those cancels get `DRAIN_TIMEOUT_S`; then connections close and resources are released.

aiohttp's `run_app(shutdown_timeout=...)` cannot keep such a promise: it waits the timeout for
handlers, then cancels them and waits the timeout again (twice the grace), the cancelled
requests get no answer at all, and when the first wait times out inside the signal-cancelled
main task its clean-up can be cut short.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from dbx_backend.keys import IN_FLIGHT

log = logging.getLogger("dbx_backend")
# After the grace: time for interrupted requests to write their 503 ...
ANSWER_WAIT_S = 0.5
# ... and for aiohttp to finish each connection (twice: before and after cancelling it).
CLOSE_WAIT_S = 0.25
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT; call it first, so a signal during start-up counts."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    return stop


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    grace_s: float,
    stop: asyncio.Event,
    ready: Callable[[], None] | None = None,
) -> None:
    """Listen on `host:port` until `stop` is set, then shut down as the module says."""
    runner = web.AppRunner(
        app,
        access_log=None,  # our middleware writes one line per request
        handler_cancellation=True,  # a client that leaves cancels its request (and statement)
        shutdown_timeout=CLOSE_WAIT_S,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        if ready is not None:
            ready()
        await stop.wait()
        await _finish_requests(runner, app, grace_s)
    finally:
        await runner.cleanup()  # on_shutdown, close connections, cleanup_ctx (drains cancels)


async def _finish_requests(runner: web.AppRunner, app: web.Application, grace_s: float) -> None:
    in_flight = app[IN_FLIGHT]
    for site in list(runner.sites):
        await site.stop()  # no new connections from here on
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections close, busy ones after
    log.info("stopping: %d requests in flight get up to %g s to finish", len(in_flight), grace_s)
    if await in_flight.wait_idle(grace_s):
        return
    interrupted = in_flight.interrupt()
    log.warning(
        "shutdown grace of %g s is over: %d requests answered 503 SHUTTING_DOWN and their "
        "statements are being cancelled",
        grace_s,
        interrupted,
    )
    await in_flight.wait_idle(ANSWER_WAIT_S)
