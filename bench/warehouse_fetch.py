"""Fetch `SELECT * FROM range(1000000)` chunk by chunk from `dbx-backend warehouse`.

Runs the local warehouse through its CLI in a subprocess, reads the result with a plain aiohttp
client as INLINE JSON_ARRAY and as EXTERNAL_LINKS ARROW_STREAM, and prints JSON: wall time per
mode and the warehouse process's peak resident memory (sampled with psutil every 10 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import aiohttp
import psutil
import pyarrow as pa

TOKEN = "dapi-bench"
STATEMENTS = "/api/2.0/sql/statements"


class RssSampler:
    """Peak RSS of one process, sampled in the background."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await asyncio.sleep(0.01)


async def fetch_inline(session: aiohttp.ClientSession, sql: str) -> int:
    """Rows read through INLINE JSON_ARRAY, following next_chunk_internal_link."""
    body = {"warehouse_id": "local", "statement": sql, "wait_timeout": "50s"}
    async with session.post(STATEMENTS, json=body) as response:
        answer = await response.json()
    assert answer["status"]["state"] == "SUCCEEDED", answer["status"]
    result: dict[str, Any] = answer["result"]
    rows = 0
    while True:
        rows += len(result.get("data_array", []))
        link = result.get("next_chunk_internal_link")
        if not link:
            return rows
        async with session.get(link) as response:
            result = await response.json()


async def fetch_arrow(session: aiohttp.ClientSession, sql: str) -> int:
    """Rows read through EXTERNAL_LINKS ARROW_STREAM, downloading each link without auth."""
    body = {
        "warehouse_id": "local",
        "statement": sql,
        "wait_timeout": "50s",
        "disposition": "EXTERNAL_LINKS",
        "format": "ARROW_STREAM",
    }
    async with session.post(STATEMENTS, json=body) as response:
        answer = await response.json()
    assert answer["status"]["state"] == "SUCCEEDED", answer["status"]
    statement_id = answer["statement_id"]
    rows = 0
    async with aiohttp.ClientSession() as bare:
        for index in range(answer["manifest"]["total_chunk_count"]):
            if index == 0:
                link = answer["result"]["external_links"][0]
            else:
                path = f"{STATEMENTS}/{statement_id}/result/chunks/{index}"
                async with session.get(path) as response:
                    link = (await response.json())["external_links"][0]
            async with bare.get(link["external_link"], headers=link.get("http_headers")) as got:
                rows += pa.ipc.open_stream(await got.read()).read_all().num_rows
    return rows


async def measure(url: str, pid: int, rows: int) -> dict[str, Any]:
    sql = f"SELECT * FROM range({int(rows)})"  # noqa: S608 - an integer we chose
    sampler = RssSampler(pid)
    idle_rss = sampler.peak
    sampling = asyncio.create_task(sampler.run())
    report: dict[str, Any] = {"rows": rows, "idle_rss_mib": round(idle_rss / 2**20, 1)}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(url, headers=headers) as session:
            for name, fetch in (("inline_json_array", fetch_inline), ("arrow_stream", fetch_arrow)):
                sampler.peak = sampler.process.memory_info().rss
                started = time.perf_counter()
                fetched = await fetch(session, sql)
                elapsed = time.perf_counter() - started
                assert fetched == rows, (name, fetched)
                report[name] = {
                    "seconds": round(elapsed, 3),
                    "rows_per_second": round(rows / elapsed),
                    "peak_rss_mib": round(sampler.peak / 2**20, 1),
                }
    finally:
        sampling.cancel()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    args = parser.parse_args()
    command = [
        sys.executable, "-m", "dbx_backend.localwarehouse.cli", "--port", "0",
        "--token", TOKEN, "--chunk-rows", str(args.chunk_rows),
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as warehouse:
        try:
            assert warehouse.stdout is not None
            settings = dict(warehouse.stdout.readline().strip().split("=", 1) for _ in range(3))
            report = asyncio.run(measure(settings["DATABRICKS_HOST"], warehouse.pid, args.rows))
            report["chunk_rows"] = args.chunk_rows
        finally:
            warehouse.terminate()
            warehouse.wait(timeout=30)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
