"""Benchmark of the dev console: how soon the first row of a 200k-row NDJSON stream is on screen.

Starts `dbx-backend warehouse` and `dbx-backend serve` (CONSOLE=true) on loopback and Debian's
Chromium (headless, through Playwright), then alternates, in one page:
- the console: Run clicked -> response headers -> first row parsed -> first row painted (the
  next task after the frame that drew it) -> stream end; and the longest main-thread task
  (Long Tasks API) while it streamed, which says whether the page stayed responsive;
- the baseline: the same request with a bare `fetch()` that reads the body and stops timing at
  the first row line (no parsing of rows, no rendering): what the service and warehouse cost.
Prints ONE JSON document on stdout. Run: `.venv/bin/python bench/console_first_row.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from typing import Any

from harness import ChildProcess, child_env, free_port, log, summarize, venv_script
from playwright.async_api import Page, async_playwright
from run import TOKEN, WAREHOUSE_ID, start_warehouse, wait_until_ready, wide_sql

TARGET_FIRST_ROW_MS = 300.0
# As the console tests launch it: nothing leaves loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP_MS = 120_000

# The bare fetch: time to the first row line ("\n[" after the header line), then to the end.
RAW_FETCH = """async (sql) => {
  const started = performance.now();
  const response = await fetch("/api/query", {method: "POST",
    headers: {"Content-Type": "application/json", "Accept": "application/x-ndjson"},
    body: JSON.stringify({sql})});
  const headers = performance.now() - started;
  const reader = response.body.getReader();
  const newline = 10, bracket = 91;
  let firstRow, previous = 0, bytes = 0;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    if (firstRow === undefined) {
      for (let i = 0; i < value.length; i++) {
        if (value[i] === bracket && (i ? value[i - 1] : previous) === newline) {
          firstRow = performance.now() - started;
          break;
        }
      }
      previous = value[value.length - 1];
    }
    bytes += value.length;
  }
  return {headers_ms: headers, first_row_ms: firstRow, end_ms: performance.now() - started, bytes};
}"""

WATCH_LONG_TASKS = """() => {
  window.benchLongTasks = [];
  window.benchObserver?.disconnect();
  window.benchObserver = new PerformanceObserver(
    (list) => list.getEntries().forEach((e) => window.benchLongTasks.push(e.duration)));
  window.benchObserver.observe({type: "longtask"});
}"""


def start_service(warehouse_port: int, port: int) -> ChildProcess:
    """`dbx-backend serve` with the console on, against the local warehouse."""
    env = child_env(
        {
            "DATABRICKS_HOST": f"http://127.0.0.1:{warehouse_port}",
            "DATABRICKS_HTTP_PATH": f"/sql/1.0/warehouses/{WAREHOUSE_ID}",
            "DATABRICKS_TOKEN": TOKEN,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "CONSOLE": "true",
            "CACHE_TTL_S": "0",  # every run runs the statement: no answer from the result cache
        }
    )
    return ChildProcess("service", [venv_script("dbx-backend"), "serve"], env)


async def console_run(page: Page, sql: str) -> dict[str, float]:
    """One Run in the console; its browser-side marks, in ms since Run was clicked."""
    await page.evaluate(WATCH_LONG_TASKS)
    await page.fill("#sql", sql)
    await page.click("#run")
    await page.wait_for_selector('#status[data-state="done"]', timeout=STEP_MS)
    await page.wait_for_function(
        "document.getElementById('grid').dataset.firstRowMs !== undefined", timeout=STEP_MS
    )
    marks: dict[str, str] = await page.evaluate("({...document.getElementById('grid').dataset})")
    long_tasks: list[float] = await page.evaluate("window.benchLongTasks")
    rows = await page.inner_text("#row-count")
    received, on_screen = float(marks["firstRowReceivedMs"]), float(marks["firstRowMs"])
    return {
        "headers_ms": float(marks["headersMs"]),
        "first_row_received_ms": received,
        "first_row_on_screen_ms": on_screen,
        "received_to_screen_ms": on_screen - received,
        "stream_end_ms": float(marks["doneMs"]),
        "longest_task_ms": max(long_tasks, default=0.0),
        "rows": float(rows.replace(",", "")),
    }


async def measure(base_url: str, sql: str, repeats: int) -> dict[str, Any]:
    """Alternate console runs and bare fetches in one page; summaries of each mark."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Chromium is missing: run scripts/bootstrap dev as root")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(base_url)
            await page.wait_for_selector("body[data-ready]", timeout=STEP_MS)
            log("warm-up")
            await console_run(page, sql)
            console: list[dict[str, float]] = []
            raw: list[dict[str, float]] = []
            for attempt in range(repeats):
                log(f"repeat {attempt + 1}/{repeats}")
                raw.append(await page.evaluate(RAW_FETCH, sql))
                console.append(await console_run(page, sql))
            version = browser.version
        finally:
            await browser.close()

    def marks(runs: list[dict[str, float]], name: str) -> dict[str, Any]:
        return summarize([run[name] for run in runs], digits=1)

    console_first = statistics.median(r["first_row_on_screen_ms"] for r in console)
    raw_first = statistics.median(r["first_row_ms"] for r in raw)
    return {
        "chromium": version,
        "console": {
            name: marks(console, name)
            for name in (
                "headers_ms",
                "first_row_received_ms",
                "first_row_on_screen_ms",
                "received_to_screen_ms",
                "stream_end_ms",
                "longest_task_ms",
            )
        },
        "console_rows": sorted({int(r["rows"]) for r in console}),
        "baseline_bare_fetch": {
            name: marks(raw, name) for name in ("headers_ms", "first_row_ms", "end_ms")
        },
        "first_row_on_screen_median_ms": round(console_first, 1),
        "bare_fetch_first_row_median_ms": round(raw_first, 1),
        # The console's own part, within each run: from the first row's bytes parsed to painted.
        "console_share_of_first_row_ms": round(
            statistics.median(r["received_to_screen_ms"] for r in console), 1
        ),
    }


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Start the processes, measure, and report against the target."""
    started = time.perf_counter()
    sql = wide_sql(args.rows)
    wport, sport = free_port(), free_port()
    with start_warehouse(wport) as warehouse, start_service(wport, sport) as service:
        await asyncio.to_thread(wait_until_ready, warehouse, wport)
        await asyncio.to_thread(
            service.wait_http, f"http://127.0.0.1:{sport}/health", ok_statuses={200}
        )
        result = await measure(f"http://127.0.0.1:{sport}", sql, args.repeats)
    first_row = result["first_row_on_screen_median_ms"]
    return {
        "benchmark": "dev console, first row of an NDJSON stream on screen",
        "note": "milliseconds; console marks from the Run click, bare-fetch marks from fetch()",
        "rows": args.rows,
        "repeats": args.repeats,
        "statement": sql,
        **result,
        "target": {
            "first_row_on_screen_ms": TARGET_FIRST_ROW_MS,
            "measured_ms": first_row,
            "met": first_row <= TARGET_FIRST_ROW_MS,
        },
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "total_s": round(time.perf_counter() - started, 1),
    }


def main() -> int:
    """Parse options, run, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run_all(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
