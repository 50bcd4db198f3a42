"""CORS as a browser enforces it: a page on another origin in a real headless Chromium calls the
service. An allowed origin reads the answer, its exposed headers and, through
Timing-Allow-Origin, the service's Server-Timing in its Resource Timing entries; another origin
reads nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.localwarehouse import LocalWarehouse, WarehouseConfig
from dbx_backend.warehouse.retry import NO_WAIT
from tests.browser import chromium

TOKEN = "dapi-cors-browser-0123456789"
STEP_MS = 20_000  # the longest one browser step may take (a loaded CI machine)
PAGE = "<!doctype html><title>another origin</title><p>a web app</p>"
# Run in the page: the calls a front end makes, and what the browser lets it see of them.
CALLS = """
async (base) => {
  const post = (accept) => fetch(base + "/api/query", {
    method: "POST",
    // Fresh runs: the streams below read the warehouse, not the cached JSON answer.
    headers: { "Content-Type": "application/json", Accept: accept, "Cache-Control": "no-cache" },
    body: JSON.stringify({ sql: "SELECT 1 AS one, CAST(9007199254740993 AS BIGINT) AS big",
                           long_as_string: true }),
  });
  const json = await post("application/json");
  const body = await json.json();
  const csv = await post("text/csv");
  await csv.text();
  const ndjson = await post("application/x-ndjson");
  const lines = (await ndjson.text()).trim().split("\\n").map((line) => JSON.parse(line));
  await new Promise((done) => setTimeout(done, 200)); // resource entries are queued
  const timing = performance.getEntriesByType("resource")
    .filter((entry) => entry.name.startsWith(base))
    .map((entry) => entry.serverTiming.map((metric) => metric.name));
  return {
    rows: body.rows,
    jsonType: body.columns[1].json_type,
    serverTiming: json.headers.get("Server-Timing"),
    requestId: json.headers.get("X-Request-ID"),
    disposition: csv.headers.get("Content-Disposition"),
    footer: lines[lines.length - 1],
    timing,
  };
}
"""


async def listen(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def page_app() -> web.Application:
    app = web.Application()

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    return app


@pytest.fixture
async def origins() -> AsyncIterator[dict[str, str]]:
    """A service, a page on an origin it allows and a page on one it does not."""
    config = WarehouseConfig(token=TOKEN, seed_samples=False, wait_timeout_scale=0.02)
    async with LocalWarehouse(config) as warehouse:
        allowed_runner, allowed = await listen(await page_app())
        other_runner, other = await listen(await page_app())
        settings = load_settings(
            {
                "DATABRICKS_HOST": warehouse.url,
                "DATABRICKS_HTTP_PATH": warehouse.http_path,
                "DATABRICKS_TOKEN": TOKEN,
                "HOST": "127.0.0.1",
                "CORS_ALLOW_ORIGINS": allowed,
            },
            env_file=None,
        )
        service = create_app(settings, retry_policy=NO_WAIT, poll_schedule=PollSchedule(0.01))
        service_runner, base = await listen(service)
        try:
            yield {"service": base, "allowed": allowed, "other": other}
        finally:
            for runner in (service_runner, allowed_runner, other_runner):
                await runner.cleanup()


async def calls_from(origin: str, service: str) -> Any:
    async with chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(STEP_MS)
        await page.goto(origin)
        try:
            return await page.evaluate(CALLS, service)
        except Exception as exc:  # the page's own error, as the browser reported it
            return {"error": str(exc)}
        finally:
            await page.close()


async def test_an_allowed_origin_reads_the_answer_its_headers_and_the_server_timing(
    origins: dict[str, str],
) -> None:
    seen = await calls_from(origins["allowed"], origins["service"])

    assert seen["rows"] == [[1, "9007199254740993"]]
    assert seen["jsonType"] == "string"
    assert seen["serverTiming"].startswith("wait;dur=")
    assert seen["requestId"]
    assert seen["disposition"].startswith('attachment; filename="result-')
    assert seen["footer"]["row_count"] == 1
    assert "fetch;dur=" in seen["footer"]["server_timing"]
    # Timing-Allow-Origin: the browser hands the service's metrics to the page.
    assert seen["timing"]
    assert all("wait" in names for names in seen["timing"])


async def test_another_origin_reads_nothing(origins: dict[str, str]) -> None:
    seen = await calls_from(origins["other"], origins["service"])

    assert "Failed to fetch" in seen["error"]
