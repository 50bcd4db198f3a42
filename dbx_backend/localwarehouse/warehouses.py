"""Handlers of the SQL Warehouses API 2.0: get, list, start, stop (warehouses reference §1).

Field names and states are Databricks' own, so a client written against the real API (ours,
the SDK's) reads the local warehouse's cold starts unchanged.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from dbx_backend.localwarehouse.errors import ApiError
from dbx_backend.localwarehouse.keys import CONFIG, POWER
from dbx_backend.localwarehouse.power import RUNNING
from dbx_backend.localwarehouse.routes import json_response, read_json

WAREHOUSES_PATH = "/api/2.0/sql/warehouses"


def warehouse_body(request: web.Request) -> dict[str, Any]:
    """`GetWarehouseResponse` of this warehouse (values other than the state are fixed)."""
    config = request.app[CONFIG]
    state = request.app[POWER].state
    host, _, port = request.host.rpartition(":") if ":" in request.host else (request.host, "", "")
    http_path = f"/sql/1.0/warehouses/{config.warehouse_id}"
    port_number = int(port) if port.isdigit() else (443 if request.scheme == "https" else 80)
    body: dict[str, Any] = {
        "id": config.warehouse_id,
        "name": f"local-{config.warehouse_id}",
        "creator_name": "local",
        "state": state,
        "cluster_size": "2X-Small",
        "min_num_clusters": 1,
        "max_num_clusters": 1,
        "num_clusters": 1 if state == RUNNING else 0,
        "num_active_sessions": 0,
        # Databricks counts whole minutes; a few seconds here still reads as "stops when idle".
        "auto_stop_mins": math.ceil(config.auto_stop_s / 60) if config.auto_stop_s > 0 else 0,
        "enable_serverless_compute": False,
        "warehouse_type": "PRO",
        "enable_photon": True,
        "spot_instance_policy": "COST_OPTIMIZED",
        "channel": {"name": "CHANNEL_NAME_CURRENT"},
        "tags": {},
        "odbc_params": {
            "hostname": host,
            "path": http_path,
            "port": port_number,
            "protocol": request.scheme,
        },
        "jdbc_url": f"jdbc:databricks://{host}:{port_number}/default;httpPath={http_path}",
    }
    if state == RUNNING:
        body["health"] = {"status": "HEALTHY"}
    return body


def _check_id(request: web.Request) -> None:
    warehouse_id = request.match_info["warehouse_id"]
    if warehouse_id != request.app[CONFIG].warehouse_id:
        raise ApiError(
            404, "RESOURCE_DOES_NOT_EXIST", f"SQL warehouse {warehouse_id} does not exist."
        )


async def get_warehouse(request: web.Request) -> web.Response:
    """GET /api/2.0/sql/warehouses/{id}: the warehouse and its state."""
    _check_id(request)
    return json_response(warehouse_body(request))


async def list_warehouses(request: web.Request) -> web.Response:
    """GET /api/2.0/sql/warehouses: the one warehouse, on one page."""
    return json_response({"warehouses": [warehouse_body(request)]})


async def start_warehouse(request: web.Request) -> web.Response:
    """POST .../start: `{}`; the start itself goes on in the background (poll GET)."""
    _check_id(request)
    await read_json(request)
    request.app[POWER].start()
    return json_response({})


async def stop_warehouse(request: web.Request) -> web.Response:
    """POST .../stop: `{}`; statements still running are cancelled."""
    _check_id(request)
    await read_json(request)
    request.app[POWER].stop()
    return json_response({})


async def admin_stop(request: web.Request) -> web.Response:
    """POST /_admin/stop: STOPPED at once, whatever `stop_s` says (for tests and demos)."""
    request.app[POWER].stop(at_once=True)
    return json_response({"state": request.app[POWER].state})


def add_routes(app: web.Application) -> None:
    """Register the Warehouses API, and the admin stop when `admin_enabled`."""
    item = WAREHOUSES_PATH + "/{warehouse_id}"
    app.router.add_get(WAREHOUSES_PATH, list_warehouses, name="warehouse_list")
    app.router.add_get(item, get_warehouse, name="warehouse_get")
    app.router.add_post(item + "/start", start_warehouse, name="warehouse_start")
    app.router.add_post(item + "/stop", stop_warehouse, name="warehouse_stop")
    if app[CONFIG].admin_enabled:
        app.router.add_post("/_admin/stop", admin_stop, name="admin_stop")
