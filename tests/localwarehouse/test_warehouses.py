"""The SQL Warehouses API of the local warehouse: state, start, stop, cold starts, auto-stop."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FakeClock
from tests.localwarehouse.conftest import Api, StartWarehouse

WAREHOUSES = "/api/2.0/sql/warehouses"
SLOW = "SELECT sleep_ms(20000) AS slept"


async def state_of(api: Api) -> str:
    status, body = await api.request("GET", f"{WAREHOUSES}/{api.warehouse.config.warehouse_id}")
    assert status == 200, body
    state = body["state"]
    assert isinstance(state, str)
    return state


async def call(api: Api, action: str) -> tuple[int, Any]:
    path = f"{WAREHOUSES}/{api.warehouse.config.warehouse_id}/{action}"
    return await api.request("POST", path, json={})


async def test_get_answers_databricks_fields_and_running_by_default(api: Api) -> None:
    status, body = await api.request("GET", f"{WAREHOUSES}/local")

    assert status == 200
    assert body["id"] == "local"
    assert body["state"] == "RUNNING"
    assert body["health"] == {"status": "HEALTHY"}
    assert body["num_clusters"] == 1
    assert body["auto_stop_mins"] == 0
    assert body["odbc_params"]["path"] == "/sql/1.0/warehouses/local"
    assert {"cluster_size", "warehouse_type", "enable_serverless_compute", "channel"} <= set(body)


async def test_list_has_the_one_warehouse(api: Api) -> None:
    status, body = await api.request("GET", WAREHOUSES)

    assert status == 200
    assert [w["id"] for w in body["warehouses"]] == ["local"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        pytest.param("GET", "", id="get"),
        pytest.param("POST", "/start", id="start"),
        pytest.param("POST", "/stop", id="stop"),
    ],
)
async def test_an_unknown_warehouse_is_404(api: Api, method: str, suffix: str) -> None:
    status, body = await api.request(method, f"{WAREHOUSES}/nope{suffix}", json={})

    assert status == 404
    assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"


async def test_the_warehouses_api_needs_the_token(start_warehouse: StartWarehouse) -> None:
    api = await start_warehouse()

    status, body = await api.request(
        "GET", f"{WAREHOUSES}/local", headers={"Authorization": "Bearer wrong"}
    )

    assert status == 401
    assert body["error_code"] == "UNAUTHENTICATED"


async def test_stop_then_start_go_through_stopping_and_starting(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, start_s=30, stop_s=5)

    stop = await call(api, "stop")
    stopping = await state_of(api)
    clock.advance(5)
    stopped = await state_of(api)
    start = await call(api, "start")
    starting = await state_of(api)
    clock.advance(29)
    still_starting = await state_of(api)
    clock.advance(1)
    running = await state_of(api)

    assert stop == start == (200, {})
    assert [stopping, stopped, starting, still_starting, running] == [
        "STOPPING",
        "STOPPED",
        "STARTING",
        "STARTING",
        "RUNNING",
    ]
    assert api.warehouse.power.starts == 1


async def test_start_while_starting_or_running_starts_nothing(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, start_s=30, start_stopped=True)

    answers = [await call(api, "start") for _ in range(3)]
    clock.advance(30)
    after_running = await call(api, "start")

    assert answers == [(200, {})] * 3
    assert after_running == (200, {})
    assert await state_of(api) == "RUNNING"
    assert api.warehouse.power.starts == 1


async def test_start_while_stopping_is_refused_until_stopped(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, stop_s=10)
    await call(api, "stop")

    status, body = await call(api, "start")

    assert status == 400
    assert body["error_code"] == "INVALID_STATE"
    assert await state_of(api) == "STOPPING"


async def test_a_statement_on_a_stopped_warehouse_starts_it_and_waits_pending(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, start_s=60, start_stopped=True)

    submitted = await api.execute("SELECT 42 AS answer", wait_timeout="5s")
    statement_id = submitted["statement_id"]
    warehouse_state = await state_of(api)
    clock.advance(59)
    still_pending = await api.get(statement_id)
    clock.advance(1)
    done = await api.wait_for(statement_id, {"SUCCEEDED", "FAILED", "CANCELED"})

    assert submitted["status"] == {"state": "PENDING"}
    assert warehouse_state == "STARTING"
    assert still_pending["status"] == {"state": "PENDING"}
    assert done["result"]["data_array"] == [["42"]]
    assert api.warehouse.power.starts == 1


async def test_statements_queued_behind_a_start_run_when_it_ends_in_real_time(
    start_warehouse: StartWarehouse,
) -> None:
    api = await start_warehouse(start_s=0.05, start_stopped=True)

    answer = await api.execute("SELECT 1 AS one", wait_timeout="50s")

    assert answer["status"]["state"] == "SUCCEEDED"
    assert api.warehouse.state == "RUNNING"


async def test_many_statements_on_a_stopped_warehouse_start_it_once(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, start_s=10, start_stopped=True)

    submitted = [await api.execute(f"SELECT {i} AS i", wait_timeout="0s") for i in range(5)]
    clock.advance(10)
    results = [
        await api.wait_for(s["statement_id"], {"SUCCEEDED", "FAILED", "CANCELED"})
        for s in submitted
    ]

    assert [r["result"]["data_array"] for r in results] == [[[str(i)]] for i in range(5)]
    assert api.warehouse.power.starts == 1


async def test_an_idle_warehouse_stops_after_auto_stop_s(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, auto_stop_s=600)
    await api.execute("SELECT 1")

    clock.advance(599)
    before = await state_of(api)
    clock.advance(1)
    after = await state_of(api)

    assert (before, after) == ("RUNNING", "STOPPED")


async def test_a_running_statement_keeps_the_warehouse_up(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, auto_stop_s=600)
    submitted = await api.execute(SLOW, wait_timeout="0s")
    await api.wait_for(submitted["statement_id"], {"RUNNING"})

    clock.advance(3600)

    assert await state_of(api) == "RUNNING"


async def test_stop_cancels_the_statements_running_on_the_warehouse(api: Api) -> None:
    submitted = await api.execute(SLOW, wait_timeout="0s")
    await api.wait_for(submitted["statement_id"], {"RUNNING"})

    await call(api, "stop")
    final = await api.wait_for(submitted["statement_id"], {"CANCELED", "SUCCEEDED", "FAILED"})

    assert final["status"] == {"state": "CANCELED"}
    assert await state_of(api) == "STOPPED"


async def test_the_admin_stop_stops_at_once(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, stop_s=60, admin_enabled=True)

    status, body = await api.request("POST", "/_admin/stop")

    assert (status, body) == (200, {"state": "STOPPED"})
    assert await state_of(api) == "STOPPED"


async def test_the_admin_stop_exists_only_with_admin(api: Api) -> None:
    status, _ = await api.request("POST", "/_admin/stop")

    assert status == 404


async def test_a_fault_can_be_injected_on_the_warehouses_api(api: Api) -> None:
    from dbx_backend.localwarehouse.faults import Fault

    api.warehouse.faults.add("warehouse_get", Fault.status(503))

    first, _ = await api.request("GET", f"{WAREHOUSES}/local")
    second, _ = await api.request("GET", f"{WAREHOUSES}/local")

    assert (first, second) == (503, 200)
