"""`LocalWarehouse`: the warehouse app served on a loopback port for the life of a block."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from aiohttp import web

from dbx_backend.localwarehouse.app import create_warehouse_app
from dbx_backend.localwarehouse.config import WarehouseConfig
from dbx_backend.localwarehouse.engine import Engine
from dbx_backend.localwarehouse.errors import ApiError
from dbx_backend.localwarehouse.faults import FaultInjector
from dbx_backend.localwarehouse.keys import ENGINE, POWER, SeenRequest
from dbx_backend.localwarehouse.power import Power

# On exit, requests in flight get this long to finish (aiohttp waits it twice: before and after
# cancelling them); then every statement still running is cancelled.
STOP_WAIT_S = 0.5


class LocalWarehouse:
    """Serves the local warehouse on `config.host`/`config.port` inside `async with`;
    on exit every statement is cancelled and the server stopped."""

    def __init__(
        self, config: WarehouseConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config or WarehouseConfig()
        self.faults = FaultInjector()
        self.requests: list[SeenRequest] = []
        self.http_path = f"/sql/1.0/warehouses/{self.config.warehouse_id}"
        self.url = ""
        self._app = create_warehouse_app(
            self.config, clock=clock, faults=self.faults, seen=self.requests
        )
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"LocalWarehouse(url={self.url!r}, warehouse_id={self.config.warehouse_id!r})"

    async def __aenter__(self) -> LocalWarehouse:
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=STOP_WAIT_S
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def engine(self) -> Engine:
        """The running engine (valid inside the `async with` block)."""
        return self._app[ENGINE]

    @property
    def power(self) -> Power:
        """The warehouse's own state: STOPPED, STARTING, RUNNING or STOPPING."""
        return self._app[POWER]

    @property
    def state(self) -> str:
        """The warehouse's state as the Warehouses API reports it now."""
        return self.power.state

    def stop(self) -> None:
        """Stop the warehouse at once, cancelling its statements (the admin stop)."""
        self.power.stop(at_once=True)

    def statement_state(self, statement_id: str) -> str:
        """The current state of a statement; KeyError if unknown or purged."""
        try:
            return self.engine.lookup(statement_id).state
        except ApiError:
            raise KeyError(statement_id) from None

    def statement_ids(self) -> list[str]:
        """Ids of every statement received and not yet purged, oldest first."""
        return self.engine.statement_ids()

    def active_statements(self) -> int:
        """How many statements are PENDING or RUNNING now."""
        return self.engine.active_count()
