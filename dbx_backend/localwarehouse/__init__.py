"""A faithful Statement Execution API 2.0 server on DuckDB, for development and tests.

Any client of the real API works against it unmodified: point it at `LocalWarehouse.url` with
the configured token and warehouse id. It imports nothing from the rest of dbx_backend.
"""

from dbx_backend.localwarehouse.app import create_warehouse_app
from dbx_backend.localwarehouse.config import WarehouseConfig
from dbx_backend.localwarehouse.faults import ENDPOINTS, Fault, FaultInjector
from dbx_backend.localwarehouse.keys import SeenRequest
from dbx_backend.localwarehouse.server import LocalWarehouse

__all__ = [
    "ENDPOINTS",
    "Fault",
    "FaultInjector",
    "LocalWarehouse",
    "SeenRequest",
    "WarehouseConfig",
    "create_warehouse_app",
]
