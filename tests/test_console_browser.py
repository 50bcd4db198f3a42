"""The dev console in a real headless Chromium, against the service and the local warehouse.

One warehouse, one service (CONSOLE=true, the repository's named queries) and one browser serve
the whole module; each test opens the console in a fresh browser context (so a fresh session
storage) and fails on any script error or Content-Security-Policy violation on the page.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage, Page

from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from dbx_backend.engine.query_service import PollSchedule
from dbx_backend.localwarehouse import LocalWarehouse, WarehouseConfig
from dbx_backend.warehouse.retry import NO_WAIT
from tests.browser import chromium

pytestmark = pytest.mark.asyncio(loop_scope="module")
TOKEN = "dapi-console-0123456789abcdef"
API_KEY = "console-test-key-0123456789"
QUERIES_DIR = Path(__file__).resolve().parent.parent / "queries"
STEP_MS = 20_000  # the longest any one browser step may take (a loaded CI machine)
# Recorded from the first byte of the page on: every CSP violation the browser reports.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


@dataclass
class Stack:
    """The local warehouse and the services started against it, on loopback ports."""

    warehouse: LocalWarehouse
    runners: list[web.AppRunner] = field(default_factory=list)

    async def start_service(self, **env: str) -> str:
        """A service with CONSOLE=true plus `env`; its base URL."""
        settings = load_settings(
            {
                "DATABRICKS_HOST": self.warehouse.url,
                "DATABRICKS_HTTP_PATH": self.warehouse.http_path,
                "DATABRICKS_TOKEN": TOKEN,
                "HOST": "127.0.0.1",
                "CONSOLE": "true",
                "QUERIES_DIR": str(QUERIES_DIR),
                **env,
            },
            env_file=None,
        )
        app = create_app(
            settings,
            retry_policy=NO_WAIT,
            poll_schedule=PollSchedule(initial_s=0.01, factor=1.5, max_s=0.1),
        )
        # As `dbx-backend serve` runs it: a client that goes away cancels its request.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        self.runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack() -> AsyncIterator[Stack]:
    config = WarehouseConfig(token=TOKEN, chunk_rows=5000, wait_timeout_scale=0.02)
    async with LocalWarehouse(config) as warehouse:
        running = Stack(warehouse)
        try:
            yield running
        finally:
            for runner in running.runners:
                await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def base_url(stack: Stack) -> str:
    return await stack.start_service()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


@dataclass
class Console:
    """The console page and what went wrong on it."""

    page: Page
    errors: list[str]

    async def problems(self) -> list[str]:
        """Script errors and CSP violations on the page so far."""
        violations: list[str] = await self.page.evaluate("window.cspViolations")
        return [*self.errors, *violations]

    async def run_sql(self, sql: str) -> None:
        await self.page.fill("#sql", sql)
        await self.page.click("#run")

    async def wait_for_state(self, state: str) -> None:
        await self.page.wait_for_selector(f'#status[data-state="{state}"]', timeout=STEP_MS)

    async def text(self, selector: str) -> str:
        return (await self.page.inner_text(selector)).strip()

    async def visible_rows(self) -> list[list[str]]:
        """The rows the table has drawn now: row number first, then each cell's text."""
        rows: list[list[str]] = await self.page.eval_on_selector_all(
            ".grid-row:not([hidden])",
            """rows => rows
                .sort((a, b) => Number(a.dataset.row) - Number(b.dataset.row))
                .map(row => [...row.children].map(cell => cell.textContent))""",
        )
        return rows

    async def header(self) -> list[tuple[str, str]]:
        """(name, type) of each column header, the row-number column left out."""
        cells: list[list[str]] = await self.page.eval_on_selector_all(
            ".grid-head .cell",
            """cells => cells.map(c => [c.querySelector('.col-name').textContent,
                                        c.querySelector('.col-type').textContent])""",
        )
        return [(name, kind) for name, kind in cells[1:]]


OpenConsole = Callable[[str], Awaitable[Console]]


@pytest_asyncio.fixture(loop_scope="module")
async def open_console(browser: Browser) -> AsyncIterator[OpenConsole]:
    contexts = []

    async def open_page(url: str) -> Console:
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        contexts.append(context)
        page = await context.new_page()
        errors: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                errors.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        await page.add_init_script(RECORD_VIOLATIONS)
        await page.goto(url)
        await page.wait_for_selector("body[data-ready]", timeout=STEP_MS)
        return Console(page, errors)

    yield open_page
    for context in contexts:
        await context.close()


async def wait_until(condition: Callable[[], bool], within_s: float = 10.0) -> bool:
    """Poll `condition` every 20 ms, at most `within_s` seconds."""
    for _ in range(int(within_s / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def test_a_query_shows_its_rows_column_types_and_ids(
    base_url: str, open_console: OpenConsole, stack: Stack
) -> None:
    console = await open_console(base_url)
    await console.run_sql(
        "SELECT 1 AS n, 'héllo' AS s, CAST(2.50 AS DECIMAL(5,2)) AS d, DATE'2024-01-02' AS day,"
        " CAST(NULL AS STRING) AS nothing UNION ALL"
        " SELECT 2, 'b', CAST(-1.00 AS DECIMAL(5,2)), DATE'2024-12-31', 'x' ORDER BY n"
    )
    await console.wait_for_state("done")

    assert await console.header() == [
        ("n", "INT"),
        ("s", "STRING"),
        ("d", "DECIMAL(5,2)"),
        ("day", "DATE"),
        ("nothing", "STRING"),
    ]
    assert await console.visible_rows() == [
        ["1", "1", "héllo", "2.50", "2024-01-02", "NULL"],
        ["2", "2", "b", "-1.00", "2024-12-31", "x"],
    ]
    assert await console.text("#row-count") == "2"
    assert (await console.text("#status")).startswith("Done: 2 rows")
    assert "wait" in await console.text("#server-timing")
    assert await console.text("#cache-outcome") == "miss"  # it ran; its copy is now stored
    statement_id = await console.text("#statement-id")
    assert stack.warehouse.statement_state(statement_id) in {"SUCCEEDED", "CLOSED"}
    assert len(await console.text("#request-id")) >= 16
    assert await console.problems() == []


async def test_a_large_result_is_virtualized_and_scrolls_to_its_last_row(
    base_url: str, open_console: OpenConsole
) -> None:
    console = await open_console(base_url)
    await console.run_sql("SELECT id, concat('row-', id) AS label FROM range(100000) AS t(id)")
    await console.wait_for_state("done")
    assert await console.text("#row-count") == "100,000"
    drawn = await console.page.locator(".grid-row").count()
    assert 0 < drawn < 200  # a screenful and some, not 100,000 elements

    await console.page.eval_on_selector("#grid", "grid => { grid.scrollTop = grid.scrollHeight }")
    await console.page.wait_for_selector('.grid-row[data-row="99999"]:not([hidden])')

    last = (await console.visible_rows())[-1]
    assert last == ["100000", "99999", "row-99999"]
    assert await console.page.locator(".grid-row").count() == drawn
    assert await console.problems() == []


async def test_cancel_ends_the_statement_canceled_on_the_warehouse(
    base_url: str, open_console: OpenConsole, stack: Stack
) -> None:
    warehouse = stack.warehouse
    sql = "SELECT sleep_ms(30000) AS slow"
    console = await open_console(base_url)
    await console.run_sql(sql)

    def submitted() -> list[str]:
        engine = warehouse.engine
        return [i for i in engine.statement_ids() if engine.lookup(i).request.statement == sql]

    assert await wait_until(lambda: bool(submitted()))
    (statement_id,) = submitted()
    assert warehouse.statement_state(statement_id) in {"PENDING", "RUNNING"}

    await console.page.click("#cancel")

    await console.wait_for_state("cancelled")
    assert await wait_until(lambda: warehouse.statement_state(statement_id) == "CANCELED")
    assert await console.page.is_enabled("#run")
    assert await console.problems() == []


async def test_an_error_shows_code_message_request_id_and_statement_id(
    base_url: str, open_console: OpenConsole, stack: Stack
) -> None:
    console = await open_console(base_url)
    await console.run_sql("SELECT * FROM samples.nyctaxi.no_such_table")
    await console.wait_for_state("failed")

    assert await console.page.is_visible("#error")
    assert await console.text("#error-code") == "SQL_ERROR"
    assert "TABLE_OR_VIEW_NOT_FOUND" in await console.text("#error-message")
    assert await console.text("#error-status") == "400"
    assert len(await console.text("#error-request-id")) >= 16
    statement_id = await console.text("#error-statement-id")
    assert stack.warehouse.statement_state(statement_id) == "FAILED"
    assert "sql_state 42P01" in await console.text("#error-details")


async def test_the_sample_tables_are_listed_with_their_column_types(
    base_url: str, open_console: OpenConsole
) -> None:
    console = await open_console(base_url)
    trips = console.page.locator('details[data-table="samples.nyctaxi.trips"]')
    await trips.locator("summary").click()
    await trips.locator(".columns li").first.wait_for(timeout=STEP_MS)

    columns = await trips.locator(".columns li").all_inner_texts()
    assert [" ".join(c.split()) for c in columns[:3]] == [
        "tpep_pickup_datetime TIMESTAMP",
        "tpep_dropoff_datetime TIMESTAMP",
        "trip_distance DOUBLE",
    ]
    assert await console.page.locator('details[data-table^="samples.tpch."]').count() == 8

    await trips.get_by_role("button", name="Query this table").click()
    assert "FROM samples.nyctaxi.trips" in await console.page.input_value("#sql")


async def test_a_named_query_runs_from_the_form_built_from_its_parameters(
    base_url: str, open_console: OpenConsole
) -> None:
    console = await open_console(base_url)
    named = console.page.locator('details[data-query="trips_by_zip"]')
    await named.locator("summary").click()
    assert await named.locator("input[name=zip]").get_attribute("placeholder") == "required"
    assert await named.locator("input[name=since]").get_attribute("type") == "date"

    await named.locator("input[name=zip]").fill("10001")
    await named.locator("input[name=limit]").fill("5")
    await named.get_by_role("button", name="Run trips_by_zip").click()
    await console.wait_for_state("done")

    assert await console.header() == [
        ("tpep_pickup_datetime", "TIMESTAMP"),
        ("tpep_dropoff_datetime", "TIMESTAMP"),
        ("trip_distance", "DOUBLE"),
        ("fare_amount", "DOUBLE"),
        ("dropoff_zip", "INT"),
    ]
    pickups = [row[1] for row in await console.visible_rows()]
    assert len(pickups) == 5  # `limit` from the form, in the order the query declares
    assert pickups == sorted(pickups, reverse=True)
    assert all(p.startswith("2016-") and p.endswith("Z") for p in pickups)


async def test_a_bad_named_query_parameter_shows_the_field_at_fault(
    base_url: str, open_console: OpenConsole
) -> None:
    console = await open_console(base_url)
    named = console.page.locator('details[data-query="trips_by_zip"]')
    await named.locator("summary").click()
    await named.locator("input[name=zip]").fill("not-a-number")
    await named.get_by_role("button", name="Run trips_by_zip").click()
    await console.wait_for_state("failed")

    assert await console.text("#error-code") == "INVALID_PARAMS"
    assert "field params.zip" in await console.text("#error-details")


async def test_behind_api_keys_the_page_asks_for_the_key_and_keeps_it_for_the_tab(
    stack: Stack, open_console: OpenConsole
) -> None:
    url = await stack.start_service(API_KEYS=API_KEY)
    console = await open_console(url)
    dialog = console.page.locator("#key-dialog")
    await dialog.wait_for(state="visible", timeout=STEP_MS)
    assert "UNAUTHORIZED" in await console.text("#tables-note")

    await console.page.fill("#key-input", API_KEY)
    await dialog.get_by_role("button", name="Save").click()

    await console.page.locator('details[data-table="samples.nyctaxi.trips"]').wait_for()
    stored = await console.page.evaluate("sessionStorage.getItem('dbx-backend.api-key')")
    assert stored == API_KEY
    assert await console.page.evaluate("localStorage.length") == 0
    await console.run_sql("SELECT 7 AS seven")
    await console.wait_for_state("done")
    assert (await console.visible_rows()) == [["1", "7"]]


async def test_the_page_breaks_no_rule_of_its_content_security_policy(
    base_url: str, open_console: OpenConsole
) -> None:
    console = await open_console(base_url)
    await console.run_sql("SELECT 1 AS one")
    await console.wait_for_state("done")
    await console.page.locator('details[data-query="fares_by_hour"] summary').click()
    await console.page.locator('details[data-table="samples.tpch.nation"] summary').click()
    await console.page.locator('details[data-table="samples.tpch.nation"] li').first.wait_for()

    assert await console.problems() == []
    openapi = console.page.get_by_role("link", name="OpenAPI (/openapi.json)")
    assert await openapi.get_attribute("href") == "/openapi.json"


READ_SPLIT_STREAM = """async (pieces) => {
  const { readResultStream } = await import("/console/ndjson.js");
  const encoder = new TextEncoder();
  const bytes = encoder.encode(pieces.join(""));
  const seen = { headers: [], rows: [], footers: [], errors: [] };
  // Cut the bytes every 7 bytes: mid-line, mid-number and inside multi-byte characters.
  const stream = new ReadableStream({
    start(controller) {
      for (let i = 0; i < bytes.length; i += 7) controller.enqueue(bytes.slice(i, i + 7));
      controller.close();
    },
  });
  let failure = null;
  try {
    await readResultStream(stream, {
      header: (line) => seen.headers.push(line),
      rows: (rows) => seen.rows.push(...rows),
      footer: (line) => seen.footers.push(line),
      error: (detail) => seen.errors.push(detail),
    });
  } catch (error) {
    failure = error.detail?.code ?? String(error);
  }
  return { ...seen, failure };
}"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def scratch_page(browser: Browser, base_url: str) -> AsyncIterator[Page]:
    """One console page shared by tests that only run the page's modules."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(base_url)
    yield page
    await context.close()


HEADER_LINE = '{"columns": [{"name": "s", "type": "STRING"}], "statement_id": "s-1"}\n'


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(
            [HEADER_LINE, '["é,\\\\n{x"]\n', "[null]\n", '{"row_count": 2, "truncated": false}\n'],
            {"rows": [["é,\\n{x"], [None]], "footers": 1, "errors": 0, "failure": None},
            id="complete",
        ),
        pytest.param(
            [HEADER_LINE, '["a"]\n', '{"error": {"code": "WAREHOUSE_ERROR", "message": "m"}}\n'],
            {"rows": [["a"]], "footers": 0, "errors": 1, "failure": None},
            id="error-line",
        ),
        pytest.param(
            [HEADER_LINE, '["a"]\n', '["b"'],
            {"rows": [["a"]], "footers": 0, "errors": 0, "failure": "STREAM_CUT"},
            id="cut-short",
        ),
    ],
)
async def test_the_stream_reader_reads_lines_cut_anywhere(
    scratch_page: Page, lines: list[str], expected: dict[str, Any]
) -> None:
    seen = await scratch_page.evaluate(READ_SPLIT_STREAM, lines)

    assert [h["statement_id"] for h in seen["headers"]] == ["s-1"]
    assert seen["rows"] == expected["rows"]
    assert len(seen["footers"]) == expected["footers"]
    assert len(seen["errors"]) == expected["errors"]
    assert seen["failure"] == expected["failure"]


async def test_the_cache_outcome_and_age_are_shown_for_json_and_streamed_answers(
    base_url: str, open_console: OpenConsole
) -> None:
    console = await open_console(base_url)
    await console.page.select_option("#format", "json")
    outcomes = []
    for format_ in ("json", "json", "ndjson"):  # stored by the first, then hits
        await console.page.select_option("#format", format_)
        await console.run_sql("SELECT 'cached' AS c, 3 AS n")
        await console.wait_for_state("done")
        shown = await console.page.is_visible("#cache-box")
        outcomes.append(await console.text("#cache-outcome") if shown else "none")
        assert await console.visible_rows() == [["1", "cached", "3"]]

    assert outcomes == ["miss", "hit", "hit"]
    assert (await console.text("#cache-age")).startswith("age ")
    assert await console.problems() == []
