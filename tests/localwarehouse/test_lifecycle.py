"""Result retention, purge, shutdown and attached data files (reference §6.3, §12)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dbx_backend.localwarehouse import LocalWarehouse
from dbx_backend.localwarehouse.request import ExecuteRequest
from tests.conftest import FakeClock
from tests.localwarehouse.conftest import BASE_CONFIG, STATEMENTS, StartWarehouse


async def test_a_result_closes_after_retention_and_is_purged_later(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, result_retention_s=3600, purge_after_s=12 * 3600)
    done = await api.execute("SELECT 1")
    path = f"{STATEMENTS}/{done['statement_id']}"

    clock.advance(3599)
    still = await api.get(done["statement_id"])
    clock.advance(1)
    closed = await api.get(done["statement_id"])
    chunk_status, _ = await api.request("GET", f"{path}/result/chunks/0")
    clock.advance(11 * 3600)
    purged_status, purged = await api.request("GET", path)

    assert still["status"]["state"] == "SUCCEEDED"
    assert closed == {"statement_id": done["statement_id"], "status": {"state": "CLOSED"}}
    assert chunk_status == 400
    assert (purged_status, purged["error_code"]) == (404, "NOT_FOUND")


async def test_failed_statements_are_purged_too(
    start_warehouse: StartWarehouse, clock: FakeClock
) -> None:
    api = await start_warehouse(clock=clock, purge_after_s=60)
    failed = await api.execute("SELECT * FROM nope")

    clock.advance(60)
    status, _ = await api.request("GET", f"{STATEMENTS}/{failed['statement_id']}")

    assert status == 404


async def test_leaving_the_block_cancels_running_statements() -> None:
    async with LocalWarehouse(BASE_CONFIG) as warehouse:
        engine = warehouse.engine
        statement = engine.submit(
            ExecuteRequest(statement="SELECT sleep_ms(30000)", warehouse_id="local")
        )
        engine.start(statement)
        await statement.wait(0.05)

    assert statement.state == "CANCELED"


async def test_data_dir_files_become_tables(
    start_warehouse: StartWarehouse, tmp_path: Path
) -> None:
    (tmp_path / "cities.csv").write_text("name,population\nOslo,700000\nBergen,290000\n")
    pq.write_table(pa.table({"id": [1, 2, 3]}), tmp_path / "ids.parquet")
    (tmp_path / "notes.txt").write_text("ignored")
    api = await start_warehouse(data_dir=tmp_path)

    cities = await api.execute("SELECT name FROM cities ORDER BY population DESC")
    ids = await api.execute("SELECT sum(id) FROM ids")

    assert cities["result"]["data_array"] == [["Oslo"], ["Bergen"]]
    assert ids["result"]["data_array"] == [["6"]]
