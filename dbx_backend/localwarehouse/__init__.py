"""A faithful Statement Execution API 2.0 server on DuckDB, for development and tests.

Any client of the real API works against it unmodified: point it at `LocalWarehouse.url` with
the configured token and warehouse id. It imports nothing from the rest of dbx_backend.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbx_backend.localwarehouse.app import create_warehouse_app
    from dbx_backend.localwarehouse.config import WarehouseConfig
    from dbx_backend.localwarehouse.faults import ENDPOINTS, Fault, FaultInjector
    from dbx_backend.localwarehouse.keys import SeenRequest
    from dbx_backend.localwarehouse.server import LocalWarehouse

# Loaded on first use, so that `dbx-backend serve` (whose CLI declares the `warehouse`
# command's options) never pays for DuckDB and pyarrow it does not need.
_EXPORTS = {
    "ENDPOINTS": "faults",
    "Fault": "faults",
    "FaultInjector": "faults",
    "LocalWarehouse": "server",
    "SeenRequest": "keys",
    "WarehouseConfig": "config",
    "create_warehouse_app": "app",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "ENDPOINTS",
    "Fault",
    "FaultInjector",
    "LocalWarehouse",
    "SeenRequest",
    "WarehouseConfig",
    "create_warehouse_app",
]
