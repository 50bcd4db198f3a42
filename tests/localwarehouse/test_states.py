"""The statement state machine: wait_timeout modes, polling and cancel (reference §3.3, §6)."""

from __future__ import annotations

import time

import pytest

from tests.localwarehouse.conftest import STATEMENTS, Api, StartWarehouse

SLOW = "SELECT sleep_ms(20000) AS slept"
CPU_HEAVY = "SELECT sum(a.id * b.id) FROM range(100000) AS a(id), range(100000) AS b(id)"


async def test_wait_timeout_0s_returns_pending_at_once(api: Api) -> None:
    answer = await api.execute(SLOW, wait_timeout="0s")

    assert answer["status"] == {"state": "PENDING"}
    assert set(answer) == {"statement_id", "status"}


async def test_a_statement_that_finishes_within_the_wait_returns_its_result(api: Api) -> None:
    answer = await api.execute("SELECT 42 AS answer", wait_timeout="5s")

    assert answer["status"]["state"] == "SUCCEEDED"
    assert answer["result"]["data_array"] == [["42"]]


async def test_wait_expiry_with_continue_returns_running_and_it_keeps_running(api: Api) -> None:
    answer = await api.execute(SLOW, wait_timeout="5s", on_wait_timeout="CONTINUE")

    assert answer["status"] == {"state": "RUNNING"}
    assert api.warehouse.statement_state(answer["statement_id"]) == "RUNNING"


async def test_wait_expiry_with_cancel_returns_canceled(api: Api) -> None:
    answer = await api.execute(SLOW, wait_timeout="5s", on_wait_timeout="CANCEL")

    assert answer["status"] == {"state": "CANCELED"}
    assert api.warehouse.active_statements() == 0


async def test_a_queued_statement_goes_pending_then_running_then_succeeded(
    start_warehouse: StartWarehouse,
) -> None:
    api = await start_warehouse(pending_delay_s=0.05)

    submitted = await api.execute("SELECT sleep_ms(50) AS slept", wait_timeout="0s")
    first = await api.get(submitted["statement_id"])
    running = await api.wait_for(submitted["statement_id"], {"RUNNING"})
    done = await api.wait_for(submitted["statement_id"], {"SUCCEEDED"})

    assert first["status"]["state"] == "PENDING"
    assert running["status"] == {"state": "RUNNING"}
    assert done["result"]["data_array"] == [["50"]]


@pytest.mark.parametrize("statement", [SLOW, CPU_HEAVY], ids=["sleeping", "cpu-bound"])
async def test_cancel_stops_a_running_statement_promptly(api: Api, statement: str) -> None:
    submitted = await api.execute(statement, wait_timeout="0s")
    statement_id = submitted["statement_id"]
    await api.wait_for(statement_id, {"RUNNING"})

    started = time.monotonic()
    status, body = await api.request("POST", f"{STATEMENTS}/{statement_id}/cancel")
    final = await api.wait_for(statement_id, {"CANCELED", "SUCCEEDED", "FAILED"})

    assert (status, body) == (200, {})
    assert final["status"] == {"state": "CANCELED"}
    assert time.monotonic() - started < 1.0
    assert api.warehouse.active_statements() == 0


async def test_cancel_of_a_queued_statement_cancels_it_before_it_runs(
    start_warehouse: StartWarehouse,
) -> None:
    api = await start_warehouse(pending_delay_s=5)
    submitted = await api.execute("SELECT 1", wait_timeout="0s")

    await api.request("POST", f"{STATEMENTS}/{submitted['statement_id']}/cancel")

    assert api.warehouse.statement_state(submitted["statement_id"]) == "CANCELED"


@pytest.mark.parametrize(
    "body",
    [pytest.param({}, id="empty-body"), pytest.param({"json": {}}, id="empty-object")],
)
async def test_cancel_of_a_finished_statement_leaves_it_unchanged(
    api: Api, body: dict[str, object]
) -> None:
    done = await api.execute("SELECT 1 AS one")

    status, answer = await api.request(
        "POST", f"{STATEMENTS}/{done['statement_id']}/cancel", **body
    )
    after = await api.get(done["statement_id"])

    assert (status, answer) == (200, {})
    assert after["status"]["state"] == "SUCCEEDED"
    assert after["result"]["data_array"] == [["1"]]


async def test_get_of_a_succeeded_statement_repeats_manifest_and_first_chunk(api: Api) -> None:
    done = await api.execute("SELECT 'a' AS x")

    again = await api.get(done["statement_id"])

    assert again == done


async def test_statements_run_concurrently_while_the_server_keeps_answering(api: Api) -> None:
    slow = [await api.execute(SLOW, wait_timeout="0s") for _ in range(3)]
    await api.wait_for(slow[-1]["statement_id"], {"RUNNING"})

    quick = await api.execute("SELECT 7 AS seven")

    assert quick["result"]["data_array"] == [["7"]]
    assert api.warehouse.active_statements() == 3
