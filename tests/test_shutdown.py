"""SIGTERM keeps the promise: answers for everyone, one cancel per statement, exit 0 in time.

Real processes, real HTTP on loopback: `dbx-backend serve` against a local warehouse in this
process (which counts the cancels it receives), and `dbx-backend dev` (warehouse inside,
counted from its log). Statements sleep 45 s and 90 s; SIGTERM comes after about 2 s with
SHUTDOWN_GRACE_S=3, so the process must be gone 8 s after the signal.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from dbx_backend.localwarehouse import LocalWarehouse
from dbx_backend.localwarehouse.faults import Fault
from tests.conftest import StartLocalWarehouse
from tests.devprocess import free_port, run_dev

GRACE_S = 3.0
EXIT_WITHIN_S = GRACE_S + 5.0
NDJSON = "application/x-ndjson"
TOKEN = "dapi-shutdown-test"


@dataclass
class Answer:
    """What one client received, and when it had all of it."""

    status: int
    body: bytes
    complete: bool  # False: the connection ended before the body did
    done_at: float

    def error_code(self) -> str:
        body: dict[str, Any] = orjson.loads(self.body)
        code: str = body["error"]["code"]
        return code

    def lines(self) -> list[dict[str, Any] | list[Any]]:
        return [orjson.loads(line) for line in self.body.splitlines()]


async def ask(
    base: str, path: str, body: dict[str, Any], accept: str = "application/json"
) -> Answer:
    """POST on a connection of its own; read the whole answer (bounded by 30 s)."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(f"{base}{path}", json=body, headers={"Accept": accept}) as response,
    ):
        received = bytearray()
        try:
            async for chunk in response.content.iter_any():
                received += chunk
        except aiohttp.ClientPayloadError:
            return Answer(response.status, bytes(received), False, time.monotonic())
        return Answer(response.status, bytes(received), True, time.monotonic())


async def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    """Poll `condition()` every 20 ms, for at most `timeout_s`."""
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def text_of(log: Path) -> str:
    return log.read_text()


async def wait_for_health(base: str, process: asyncio.subprocess.Process, log: Path) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        for _ in range(300):  # up to ~30 s on a loaded machine
            if process.returncode is not None:
                pytest.fail(f"the service exited at start: {text_of(log)}")
            try:
                async with session.get(f"{base}/health") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    pytest.fail("the service did not answer /health in time")


async def refuses_connections(base: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"{base}/health"),
        ):
            return False
    except aiohttp.ClientConnectorError:
        return True


async def exit_after_sigterm(process: asyncio.subprocess.Process) -> tuple[int | None, float]:
    """SIGTERM; the exit code and seconds until exit (None if still running after 15 s)."""
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        code = await asyncio.wait_for(process.wait(), 15)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None, time.monotonic() - sent
    return code, time.monotonic() - sent


@pytest.fixture
async def warehouse(local_warehouse: StartLocalWarehouse) -> LocalWarehouse:
    # 100-row chunks: a 300-row result has chunks the service must fetch after the first.
    return await local_warehouse(token=TOKEN, chunk_rows=100, wait_timeout_scale=1.0)


def statement_ids_by_sql(warehouse: LocalWarehouse) -> dict[str, str]:
    return {
        warehouse.engine.lookup(sid).request.statement: sid for sid in warehouse.statement_ids()
    }


def cancels_of(warehouse: LocalWarehouse, statement_id: str) -> int:
    return sum(
        1 for r in warehouse.requests if r.endpoint == "cancel" and f"/{statement_id}/" in r.path
    )


async def test_sigterm_answers_every_client_cancels_each_statement_once_and_exits_in_time(
    warehouse: LocalWarehouse, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "API_KEYS"))}
    env |= {
        "DATABRICKS_HOST": warehouse.url,
        "DATABRICKS_HTTP_PATH": warehouse.http_path,
        "DATABRICKS_TOKEN": TOKEN,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SHUTDOWN_GRACE_S": str(GRACE_S),
        "SUBMIT_WAIT_TIMEOUT_S": "5",
        "LOG_FORMAT": "text",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbx_backend", "serve", cwd=tmp_path, env=env,
            stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        await wait_for_health(base, process, log)
        # Streams that have started: their later chunks are slow to come.
        warehouse.faults.add("get_chunk", Fault.delay(8.0), times=None)
        query, statements = "/api/query", "/api/statements"
        started = time.monotonic()  # SIGTERM goes out 3 s from here
        handed_out = asyncio.create_task(
            ask(base, statements, {"sql": "SELECT sleep_ms(45000) AS handed_out", "wait_s": 5})
        )  # its 202 comes after the 5 s submit wait: within the grace
        await asyncio.sleep(1.0)
        clients = {
            "buffered": ask(base, query, {"sql": "SELECT sleep_ms(45000) AS buffered"}),
            "ndjson_waiting": ask(
                base, query, {"sql": "SELECT sleep_ms(90000) AS streamed"}, NDJSON
            ),
            "ndjson_started": ask(
                base, query, {"sql": "SELECT * FROM range(300)", "disposition": "INLINE"}, NDJSON
            ),
            "csv_started": ask(
                base,
                query,
                {"sql": "SELECT * FROM range(300) AS r(n)", "disposition": "INLINE"},
                "text/csv",
            ),
        }
        tasks = {name: asyncio.create_task(answer) for name, answer in clients.items()}
        await asyncio.sleep(0.8)
        # 1.2 s before SIGTERM: the warehouse holds its submit 5 s (wait_s 6.5 keeps a second
        # and more), which outlasts the 3 s grace, so the grace ends while the service still
        # waits for the statement id.
        tasks["submit_waiting"] = asyncio.create_task(
            ask(base, statements, {"sql": "SELECT sleep_ms(90000) AS submitted", "wait_s": 6.5})
        )
        await wait_until(lambda: len(warehouse.statement_ids()) == 6, 1, "six statements")
        await asyncio.sleep(max(0.0, started + 3.0 - time.monotonic()))

        sigterm_at = time.monotonic()
        exiting = asyncio.create_task(exit_after_sigterm(process))
        await asyncio.sleep(0.3)
        refused_at_once = await refuses_connections(base)
        code, exit_s = await exiting
        answers = {name: await asyncio.wait_for(task, 10) for name, task in tasks.items()}
        handed = await asyncio.wait_for(handed_out, 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    timings = {name: round(a.done_at - sigterm_at, 2) for name, a in answers.items()}
    print(orjson.dumps({"sigterm_to_exit_s": round(exit_s, 2), "answers_s": timings}).decode())
    output = text_of(log)
    assert code == 0, output
    assert exit_s < EXIT_WITHIN_S, output
    assert refused_at_once
    assert "Traceback" not in output, output

    for name in ("buffered", "ndjson_waiting", "submit_waiting"):
        answer = answers[name]
        assert (answer.status, answer.complete) == (503, True), (name, answer)
        assert answer.error_code() == "SHUTTING_DOWN", name
    ndjson = answers["ndjson_started"]
    assert (ndjson.status, ndjson.complete) == (200, True)
    lines = ndjson.lines()
    assert isinstance(lines[0], dict)
    assert "columns" in lines[0]
    assert lines[1:-1] == [[n] for n in range(100)]  # the first chunk, then the end
    assert isinstance(lines[-1], dict)
    assert lines[-1]["error"]["code"] == "SHUTTING_DOWN"
    csv = answers["csv_started"]
    assert (csv.status, csv.complete) == (200, False)  # cut: never mistaken for a whole file
    assert csv.body.startswith(b"n\r\n0\r\n1\r\n")
    assert handed.status == 202  # answered within the grace: the statement is the caller's

    ids = statement_ids_by_sql(warehouse)
    owned = [ids[f"SELECT sleep_ms({ms}) AS {alias}"] for ms, alias in (
        (45000, "buffered"), (90000, "streamed"), (90000, "submitted"),
    )]  # fmt: skip
    await wait_until(
        lambda: all(warehouse.statement_state(sid) == "CANCELED" for sid in owned),
        5,
        "the owned statements to end CANCELED",
    )
    assert [cancels_of(warehouse, sid) for sid in owned] == [1, 1, 1]
    callers = ids["SELECT sleep_ms(45000) AS handed_out"]
    assert warehouse.statement_state(callers) == "RUNNING"
    assert cancels_of(warehouse, callers) == 0
    finished = [sid for sql, sid in ids.items() if "range(300)" in sql]
    assert [warehouse.statement_state(sid) for sid in finished] == ["SUCCEEDED"] * 2
    assert [cancels_of(warehouse, sid) for sid in finished] == [0, 0]


_CANCEL_LINE = re.compile(r"cancel of statement (\S+) requested while (\w+)")


async def test_dev_stops_service_and_warehouse_in_time_after_cancelling_each_statement(
    tmp_path: Path,
) -> None:
    env = {"SHUTDOWN_GRACE_S": str(GRACE_S), "SUBMIT_WAIT_TIMEOUT_S": "5"}
    with run_dev(tmp_path, env=env) as dev:
        base = f"http://127.0.0.1:{dev.port}"
        tasks = {
            "buffered": asyncio.create_task(
                ask(base, "/api/query", {"sql": "SELECT sleep_ms(45000)"})
            ),
            "ndjson_waiting": asyncio.create_task(
                ask(base, "/api/query", {"sql": "SELECT sleep_ms(90000)"}, NDJSON)
            ),
        }
        await asyncio.sleep(0.8)
        # Still waiting for its statement id when the grace ends (see the test above).
        tasks["submit_waiting"] = asyncio.create_task(
            ask(
                base,
                "/api/statements",
                {"sql": "SELECT sleep_ms(90000) AS submitted", "wait_s": 6.5},
            )
        )
        await asyncio.sleep(1.2)
        dev.process.send_signal(signal.SIGTERM)
        sigterm_at = time.monotonic()
        answers = {name: await asyncio.wait_for(task, 15) for name, task in tasks.items()}
        for _ in range(int(15 / 0.02)):  # bounded: 15 s
            if dev.process.poll() is not None:
                break
            await asyncio.sleep(0.02)
        exit_s = time.monotonic() - sigterm_at
        code = dev.process.poll()
        output = dev.output()

    timings = {name: round(a.done_at - sigterm_at, 2) for name, a in answers.items()}
    print(orjson.dumps({"dev_sigterm_to_exit_s": round(exit_s, 2), "answers_s": timings}).decode())
    assert code == 0, output
    assert exit_s < EXIT_WITHIN_S, output
    assert "Traceback" not in output
    for name, answer in answers.items():
        assert (answer.status, answer.complete) == (503, True), (name, answer)
        assert answer.error_code() == "SHUTTING_DOWN", name
    cancels = _CANCEL_LINE.findall(output)
    assert len(cancels) == 3, output
    assert len({sid for sid, _ in cancels}) == 3  # one cancel per statement
    assert {state for _, state in cancels} == {"RUNNING"}
