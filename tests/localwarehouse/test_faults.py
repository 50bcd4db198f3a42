"""Scripted fault injection per endpoint, in process and over the admin route."""

from __future__ import annotations

import time

import aiohttp
import pytest

from dbx_backend.localwarehouse import Fault, FaultInjector
from tests.localwarehouse.conftest import STATEMENTS, Api, StartWarehouse


async def test_a_status_fault_answers_with_the_standard_body_and_retry_after(api: Api) -> None:
    api.warehouse.faults.add("execute", Fault.status(429, retry_after=2))

    response = await api.session.post(STATEMENTS, json={"warehouse_id": "local", "statement": "1"})
    body = await response.json()

    assert (response.status, response.headers["Retry-After"]) == (429, "2")
    assert body["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert api.warehouse.active_statements() == 0


async def test_a_fault_applies_the_given_number_of_times_then_stops(api: Api) -> None:
    done = await api.execute("SELECT 1")
    api.warehouse.faults.add("get_statement", Fault.status(503), times=2)
    path = f"{STATEMENTS}/{done['statement_id']}"

    statuses = [(await api.request("GET", path))[0] for _ in range(3)]

    assert statuses == [503, 503, 200]


async def test_after_lets_the_first_requests_through(api: Api) -> None:
    done = await api.execute("SELECT * FROM range(3000)")
    api.warehouse.faults.add("get_chunk", Fault.status(500), after=1)
    path = f"{STATEMENTS}/{done['statement_id']}/result/chunks/"

    statuses = [(await api.request("GET", path + str(i)))[0] for i in (1, 2, 2)]

    assert statuses == [200, 500, 200]


@pytest.mark.parametrize(
    ("text", "content_type"),
    [
        pytest.param("", "text/plain", id="empty"),
        pytest.param("TEMPORARILY_UNAVAILABLE: try later", "text/plain", id="code-colon-message"),
        pytest.param("<html><title>502 Bad Gateway</title></html>", "text/html", id="html"),
    ],
)
async def test_a_body_fault_sends_the_raw_body(api: Api, text: str, content_type: str) -> None:
    api.warehouse.faults.add("execute", Fault.body(502, text, content_type=content_type))

    response = await api.session.post(STATEMENTS, json={"warehouse_id": "local", "statement": "1"})

    assert response.status == 502
    assert response.content_type == content_type
    assert await response.text() == text


async def test_a_drop_closes_the_connection_without_an_answer(api: Api) -> None:
    api.warehouse.faults.add("execute", Fault.drop())

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.execute("SELECT 1")

    assert api.warehouse.active_statements() == 0
    assert len(api.warehouse.statement_ids()) == 0


async def test_a_drop_after_the_handler_runs_the_statement_but_loses_the_answer(
    api: Api,
) -> None:
    api.warehouse.faults.add("execute", Fault.drop(after_handler=True))

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.execute("SELECT 1")

    assert len(api.warehouse.statement_ids()) == 1


async def test_a_delay_answers_normally_after_waiting(api: Api) -> None:
    api.warehouse.faults.add("execute", Fault.delay(0.05))

    started = time.monotonic()
    answer = await api.execute("SELECT 1")

    assert time.monotonic() - started >= 0.05
    assert answer["status"]["state"] == "SUCCEEDED"


async def test_clear_removes_scripted_faults(api: Api) -> None:
    api.warehouse.faults.add("execute", Fault.status(500), times=None)

    api.warehouse.faults.clear()
    answer = await api.execute("SELECT 1")

    assert answer["status"]["state"] == "SUCCEEDED"


async def test_the_admin_route_scripts_faults_when_enabled(
    start_warehouse: StartWarehouse,
) -> None:
    api = await start_warehouse(admin_enabled=True)

    status, _ = await api.request(
        "POST",
        "/_admin/faults",
        json={"endpoint": "execute", "fault": {"kind": "status", "status": 503}, "times": 1},
    )
    failed, _ = await api.request(
        "POST", STATEMENTS, json={"warehouse_id": "local", "statement": "1"}
    )

    assert (status, failed) == (200, 503)
    assert api.warehouse.faults.pending("execute") == 0


async def test_the_admin_route_does_not_exist_unless_enabled(api: Api) -> None:
    status, _ = await api.request(
        "POST", "/_admin/faults", json={"endpoint": "execute", "fault": {"kind": "drop"}}
    )

    assert status == 404
    assert api.warehouse.faults.pending("execute") == 0


def test_faults_refuse_unknown_endpoints() -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        FaultInjector().add("nope", Fault.drop())
