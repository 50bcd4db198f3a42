"""Benchmarks of issues 4 and 12: large results, the lsql client stack, small-query latency,
and (issue 12) the Arrow stream and NDJSON against the raw Arrow chunks in one run.

Starts `dbx-backend warehouse` and `dbx-backend serve` on loopback, runs every case several
times, samples each process's peak RSS, and prints ONE JSON document on stdout (progress goes
to stderr). Run it with the project's interpreter: `.venv/bin/python bench/run.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from harness import (
    ChildProcess,
    RssSampler,
    child_env,
    free_port,
    log,
    percentile,
    summarize,
    venv_script,
)

BENCH_DIR = Path(__file__).resolve().parent
LSQL_VENV = BENCH_DIR / ".venv-lsql"
LSQL_REQUIREMENTS = BENCH_DIR / "requirements-lsql.txt"
TOKEN = "dapi-local"  # the local warehouse's fake token, not a secret
WAREHOUSE_ID = "local"
STATEMENTS = "/api/2.0/sql/statements"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"}
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10)
SMALL_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5)

# Eight columns, one per type the issue names; Databricks SQL that the local warehouse accepts.
WIDE_SQL = (
    "SELECT id,"
    " CAST(id AS DOUBLE) * 1.5 AS dbl,"
    " CAST(id / 100 AS DECIMAL(18,2)) AS dec,"
    " concat('row-', id) AS str,"
    " CAST(date_add(DATE'2020-01-01', CAST(id % 1000 AS INT)) AS DATE) AS dt,"
    " timestampadd(SECOND, id, TIMESTAMP'2020-01-01 00:00:00') AS ts,"
    " id % 2 = 0 AS flag,"
    " CASE WHEN id % 3 = 0 THEN NULL ELSE id END AS maybe"
    " FROM range({rows}) AS t(id)"
)


def wide_sql(rows: int) -> str:
    """The mixed-type statement over `rows` rows."""
    return WIDE_SQL.format(rows=int(rows))


# Issue 12's statement: seven mixed columns (the eight above less the nullable LONG).
SEVEN_SQL = (
    "SELECT id,"
    " CAST(id AS DOUBLE) * 1.5 AS dbl,"
    " CAST(id / 100 AS DECIMAL(18,2)) AS dec,"
    " concat('row-', id) AS str,"
    " CAST(date_add(DATE'2020-01-01', CAST(id % 1000 AS INT)) AS DATE) AS dt,"
    " timestampadd(SECOND, id, TIMESTAMP'2020-01-01 00:00:00') AS ts,"
    " id % 2 = 0 AS flag"
    " FROM range({rows}) AS t(id)"
)
ARROW_MEDIA = "application/vnd.apache.arrow.stream"


def seven_sql(rows: int) -> str:
    """Issue 12's seven-column statement over `rows` rows."""
    return SEVEN_SQL.format(rows=int(rows))


@dataclass
class Read:
    """What one read of a result produced."""

    rows: int
    bytes: int
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


# -- baseline: a minimal client of the warehouse, no parsing of the rows -----------------------


async def submit_and_wait(
    session: aiohttp.ClientSession, body: dict[str, Any], *, deadline_s: float = 120.0
) -> dict[str, Any]:
    """Submit a statement and poll until it is terminal; the final response."""
    async with session.post(STATEMENTS, json=body) as response:
        answer: dict[str, Any] = orjson.loads(await response.read())
    deadline = time.monotonic() + deadline_s
    while answer.get("status", {}).get("state") not in TERMINAL:
        if time.monotonic() > deadline:
            raise TimeoutError(f"statement still {answer['status']['state']} after {deadline_s}s")
        await asyncio.sleep(0.05)
        async with session.get(f"{STATEMENTS}/{answer['statement_id']}") as response:
            answer = orjson.loads(await response.read())
    return answer


def _check_succeeded(answer: dict[str, Any]) -> None:
    status = answer.get("status", {})
    if status.get("state") != "SUCCEEDED":
        error = status.get("error", {})
        raise RuntimeError(f"{status.get('state')}: {error.get('message', answer)}"[:400])


async def baseline_external(
    session: aiohttp.ClientSession, bare: aiohttp.ClientSession, sql: str, result_format: str
) -> Read:
    """EXTERNAL_LINKS: submit, poll, then GET every chunk's link one after another (raw bytes)."""
    started = time.perf_counter()
    body = {
        "warehouse_id": WAREHOUSE_ID,
        "statement": sql,
        "wait_timeout": "50s",
        "on_wait_timeout": "CONTINUE",
        "disposition": "EXTERNAL_LINKS",
        "format": result_format,
    }
    answer = await submit_and_wait(session, body)
    _check_succeeded(answer)
    ready = time.perf_counter()
    rows = size = 0
    links: list[dict[str, Any]] = answer["result"].get("external_links", [])
    for _ in range(100_000):  # bounded: far more chunks than any result here has
        if not links:
            break
        link = links[0]
        async with bare.get(link["external_link"], headers=link.get("http_headers")) as got:
            got.raise_for_status()
            size += len(await got.read())
        rows += link["row_count"]
        next_link = link.get("next_chunk_internal_link")
        if not next_link:
            break
        async with session.get(next_link) as response:
            links = orjson.loads(await response.read()).get("external_links", [])
    done = time.perf_counter()
    return Read(rows, size, done - started, {"submit_s": ready - started})


async def baseline_inline(session: aiohttp.ClientSession, sql: str) -> Read:
    """INLINE JSON_ARRAY: submit, poll, then follow next_chunk_internal_link to the end."""
    started = time.perf_counter()
    body = {
        "warehouse_id": WAREHOUSE_ID,
        "statement": sql,
        "wait_timeout": "50s",
        "on_wait_timeout": "CONTINUE",
    }
    answer = await submit_and_wait(session, body)
    _check_succeeded(answer)
    ready = time.perf_counter()
    result: dict[str, Any] = answer.get("result", {})
    rows, size = 0, len(orjson.dumps(result))  # the first chunk came with the final status
    for _ in range(100_000):
        rows += result.get("row_count", 0)
        next_link = result.get("next_chunk_internal_link")
        if not next_link:
            break
        async with session.get(next_link) as response:
            raw = await response.read()
        size += len(raw)
        result = orjson.loads(raw)
    done = time.perf_counter()
    return Read(rows, size, done - started, {"submit_s": ready - started})


# -- the service --------------------------------------------------------------------------------


async def service_read(
    session: aiohttp.ClientSession, sql: str, accept: str, *, disposition: str | None = None
) -> Read:
    """POST /api/query and read the whole body; rows counted from the body (after the timer)."""
    body: dict[str, Any] = {"sql": sql, "timeout_s": 280}
    if disposition is not None:
        body["disposition"] = disposition
    started = time.perf_counter()
    first_byte = 0.0
    parts: list[bytes] = []
    newlines = size = 0
    last_line = b""
    async with session.post("/api/query", json=body, headers={"Accept": accept}) as response:
        if response.status != 200:
            text = (await response.read())[:400].decode(errors="replace")
            raise RuntimeError(f"HTTP {response.status}: {text}")
        async for piece in response.content.iter_chunked(1 << 20):
            if not first_byte:
                first_byte = time.perf_counter()
            size += len(piece)
            if accept in ("application/json", ARROW_MEDIA):
                parts.append(piece)
            else:
                newlines += piece.count(b"\n")
                last_line = (last_line + piece)[-512:]
    done = time.perf_counter()
    if accept == ARROW_MEDIA:
        import pyarrow as pa

        rows = pa.ipc.open_stream(b"".join(parts)).read_all().num_rows
    elif accept == "application/json":
        document = orjson.loads(b"".join(parts))
        if document["truncated"]:
            raise RuntimeError(f"JSON result truncated at {document['row_count']} rows")
        rows = len(document["rows"])
    elif accept == "application/x-ndjson":
        footer = orjson.loads(last_line.rstrip(b"\n").rsplit(b"\n", 1)[-1])
        if "row_count" not in footer:
            raise RuntimeError(f"stream ended without a footer: {footer}")
        rows = newlines - 2
        if rows != footer["row_count"]:
            raise RuntimeError(f"counted {rows} rows, footer says {footer['row_count']}")
    else:
        rows = newlines - 1  # the header; no value here contains a line break
    return Read(rows, size, done - started, {"ttfb_s": first_byte - started})


async def probe_status(session: aiohttp.ClientSession, sql: str) -> dict[str, Any]:
    """One buffered JSON request with the service's defaults: its status and error code."""
    async with session.post("/api/query", json={"sql": sql}) as response:
        answer = orjson.loads(await response.read())
    error = answer.get("error", {}) if isinstance(answer, dict) else {}
    return {
        "http_status": response.status,
        "error_code": error.get("code"),
        "message": str(error.get("message", ""))[:300] or None,
        "row_count": answer.get("row_count"),
        "truncated": answer.get("truncated"),
    }


# -- measuring ------------------------------------------------------------------------------


async def measure(
    name: str,
    read: Callable[[], Awaitable[Read]],
    pids: dict[str, int],
    *,
    repeats: int,
    expected_rows: int,
) -> dict[str, Any]:
    """Run `read` `repeats` times, sampling RSS; wall time, rows/s and memory per process."""
    walls: list[float] = []
    extras: dict[str, list[float]] = {}
    memory: dict[str, dict[str, list[float]]] = {
        p: {"before": [], "peak": [], "cpu": []} for p in pids
    }
    rows = size = 0
    for attempt in range(repeats):
        with RssSampler(pids) as sampler:
            result = await read()
        if result.rows != expected_rows:
            raise RuntimeError(f"{name}: read {result.rows} rows, expected {expected_rows}")
        rows, size = result.rows, result.bytes
        walls.append(result.seconds)
        for key, value in result.extra.items():
            extras.setdefault(key, []).append(value)
        for process, numbers in sampler.report().items():
            memory[process]["before"].append(numbers["rss_before_mib"])
            memory[process]["peak"].append(numbers["peak_rss_mib"])
            memory[process]["cpu"].append(numbers["cpu_s"])
        log(f"{name} run {attempt + 1}/{repeats}: {result.seconds:.2f} s")
    median = statistics.median(walls)
    return {
        "rows": rows,
        "body_bytes": size,
        "wall_s": summarize(walls),
        "rows_per_s_median": round(rows / median),
        **{key: summarize(values) for key, values in extras.items()},
        "rss_mib": {
            process: {
                "before_median": statistics.median(numbers["before"]),
                "peak_median": statistics.median(numbers["peak"]),
                "peak_max": max(numbers["peak"]),
                "peak_runs": numbers["peak"],
            }
            for process, numbers in memory.items()
        },
        "cpu_s": {process: summarize(numbers["cpu"]) for process, numbers in memory.items()},
    }


async def guarded(name: str, case: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A case's report, or its error: one failing case does not hide the others."""
    try:
        return await case
    except Exception as exc:
        log(f"{name} failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


async def load(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    requests: int,
    concurrency: int,
    warmup: int,
    check: Callable[[int, bytes], bool],
) -> dict[str, Any]:
    """Send `requests` POSTs from `concurrency` workers; latency percentiles and requests/s."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(
        url, connector=connector, headers=headers, timeout=SMALL_TIMEOUT
    ) as session:
        path = "/api/query" if "sql" in body else STATEMENTS
        payload = orjson.dumps(body)
        post_headers = {"Content-Type": "application/json"}
        latencies: list[float] = []
        errors: list[str] = []

        async def one() -> None:
            started = time.perf_counter()
            async with session.post(path, data=payload, headers=post_headers) as response:
                raw = await response.read()
            latencies.append(time.perf_counter() - started)
            if not check(response.status, raw):
                errors.append(f"{response.status}: {raw[:200].decode(errors='replace')}")

        async def worker(count: int) -> None:
            for _ in range(count):
                await one()

        async def run(total: int) -> None:
            share, rest = divmod(total, concurrency)
            async with asyncio.timeout(240), asyncio.TaskGroup() as group:
                for index in range(concurrency):
                    group.create_task(worker(share + (1 if index < rest else 0)))

        await run(warmup)
        latencies.clear()
        errors.clear()
        started = time.perf_counter()
        await run(requests)
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 3),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
        "requests_per_s": round(requests / elapsed, 1),
    }


def _service_ok(status: int, raw: bytes) -> bool:
    return status == 200 and orjson.loads(raw).get("rows") == [[1]]


def _warehouse_ok(status: int, raw: bytes) -> bool:
    return status == 200 and orjson.loads(raw).get("status", {}).get("state") == "SUCCEEDED"


# -- the processes ------------------------------------------------------------------------------


def start_warehouse(port: int) -> ChildProcess:
    """`dbx-backend warehouse` on `port` (not yet started: use as a context manager)."""
    argv = [venv_script("dbx-backend"), "warehouse", "--port", str(port), "--token", TOKEN]
    return ChildProcess("warehouse", argv, child_env({}))


def service_env(warehouse_port: int, port: int, result_format: str) -> dict[str, str]:
    """The service's configuration for the benchmark (reported in the JSON, token excluded)."""
    return {
        "DATABRICKS_HOST": f"http://127.0.0.1:{warehouse_port}",
        "DATABRICKS_HTTP_PATH": f"/sql/1.0/warehouses/{WAREHOUSE_ID}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        # The buffered JSON case must return the whole 1M rows, not the default 100k cap.
        "MAX_RESULT_ROWS": "1000000",
        "MAX_RESULT_BYTES": str(1 << 30),
        "MAX_QUERY_TIMEOUT_S": "300",
        "EXTERNAL_LINKS_FORMAT": result_format,
    }


def start_service(env: dict[str, str], source: str | None = None) -> ChildProcess:
    """`dbx-backend serve` with `env` plus the token (not yet started); from the source tree
    `source` (an export of another commit) instead of the installed package when given."""
    full = child_env(
        {**env, "DATABRICKS_TOKEN": TOKEN, **({"PYTHONPATH": source} if source else {})}
    )
    return ChildProcess("service", [venv_script("dbx-backend"), "serve"], full)


@asynccontextmanager
async def running_service(
    wport: int, result_format: str, source: str | None = None
) -> AsyncIterator[tuple[int, int]]:
    """A fresh `dbx-backend serve` for one case: (port, pid); stopped on exit, even on error."""
    sport = free_port()
    with start_service(service_env(wport, sport, result_format), source) as service:
        await asyncio.to_thread(
            service.wait_http, f"http://127.0.0.1:{sport}/health", ok_statuses={200}
        )
        yield sport, service.pid


def wait_until_ready(warehouse: ChildProcess, wport: int) -> None:
    """Bounded wait for the warehouse: any HTTP answer (401 without a token) means it listens."""
    warehouse.wait_http(f"http://127.0.0.1:{wport}{STATEMENTS}/none", ok_statuses={401, 404})


# -- lsql in its own environment -----------------------------------------------------------------


def ensure_lsql_venv() -> dict[str, Any]:
    """Create bench/.venv-lsql from requirements-lsql.txt when missing or out of date."""
    stamp = LSQL_VENV / "requirements.sha256"
    wanted = hashlib.sha256(LSQL_REQUIREMENTS.read_bytes()).hexdigest()
    python = LSQL_VENV / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return {"created": False}
    log("creating bench/.venv-lsql (databricks-sdk + databricks-labs-lsql)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LSQL_VENV)], check=True)
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(LSQL_REQUIREMENTS)],
        capture_output=True,
        timeout=420,
        check=False,
    )
    if pip.returncode != 0:
        raise OSError(f"pip install failed: {pip.stderr.decode(errors='replace')[-400:]}")
    stamp.write_text(wanted + "\n")
    return {"created": True, "install_s": round(time.perf_counter() - started, 1)}


def run_lsql(wport: int, sql: str, *options: str) -> dict[str, Any]:
    """One `fetch_all` of `sql` in a fresh lsql process; its report plus sampled peak RSS."""
    argv = [
        str(LSQL_VENV / "bin" / "python"),
        str(BENCH_DIR / "lsql_client.py"),
        "--host",
        f"http://127.0.0.1:{wport}",
        "--token",
        TOKEN,
        "--warehouse-id",
        WAREHOUSE_ID,
        "--sql",
        sql,
        *options,
    ]
    env = child_env({"DATABRICKS_CONFIG_FILE": os.devnull})
    started = time.perf_counter()
    with (
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child,
        RssSampler({"lsql": child.pid}) as sampler,
    ):
        try:
            out, err = child.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate(timeout=10)
            return {"error": "lsql client ran past 300 s"}
    wall = time.perf_counter() - started
    lines = out.decode(errors="replace").strip().splitlines()
    if child.returncode != 0 or not lines:
        return {"error": f"exit {child.returncode}: {err.decode(errors='replace')[-400:]}"}
    report: dict[str, Any] = json.loads(lines[-1])
    report["process_wall_s"] = round(wall, 3)
    report["sampled_peak_rss_mib"] = sampler.report()["lsql"]["peak_rss_mib"]
    return report


def lsql_case(
    wport: int, rows: int, repeats: int, sql: str | None = None, *, as_shipped: bool = True
) -> dict[str, Any]:
    """lsql's fetch_all: as shipped (records why it fails), then with a DECIMAL converter added."""
    sql = sql or wide_sql(rows)
    report: dict[str, Any] = {"environment": ensure_lsql_venv()}
    if as_shipped:
        report["as_shipped_default_disposition"] = run_lsql(wport, sql)
        report["as_shipped_external_links"] = run_lsql(
            wport, sql, "--disposition", "EXTERNAL_LINKS"
        )
    runs = []
    for attempt in range(repeats):
        run = run_lsql(wport, sql, "--disposition", "EXTERNAL_LINKS", "--decimal-converter")
        if "error" in run or run.get("rows") != rows:
            report["with_decimal_converter"] = {"error": run.get("error", run)}
            return report
        log(f"lsql run {attempt + 1}/{repeats}: {run['seconds']:.2f} s")
        runs.append(run)
    seconds = [r["seconds"] for r in runs]
    report["with_decimal_converter"] = {
        "rows": rows,
        "fetch_all_s": summarize(seconds),
        "process_wall_s": summarize([r["process_wall_s"] for r in runs]),
        "rows_per_s_median": round(rows / statistics.median(seconds)),
        "peak_rss_mib_median": statistics.median(r["sampled_peak_rss_mib"] for r in runs),
        "warnings": runs[0]["warnings"],
    }
    return report


# -- the run ----------------------------------------------------------------------------------


async def baseline_cases(
    wport: int, pids: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    """Case 1 baselines: the raw chunks straight from the warehouse, no service involved."""
    sql, rows, repeats = wide_sql(args.rows), args.rows, args.repeats
    auth = {"Authorization": f"Bearer {TOKEN}"}
    report: dict[str, Any] = {}
    async with (
        aiohttp.ClientSession(
            f"http://127.0.0.1:{wport}", headers=auth, timeout=REQUEST_TIMEOUT
        ) as session,
        aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as bare,
    ):
        for fmt in ("JSON_ARRAY", "ARROW_STREAM"):
            name = f"baseline {fmt}"
            read = partial(baseline_external, session, bare, sql, fmt)
            report[f"external_links_{fmt.lower()}"] = await guarded(
                name, measure(name, read, pids, repeats=repeats, expected_rows=rows)
            )
        try:
            await baseline_inline(session, sql)
            inline_full: dict[str, Any] = {"error": None}
        except RuntimeError as exc:
            inline_full = {"error": str(exc)}
        name = "baseline INLINE"
        read = partial(baseline_inline, session, wide_sql(args.inline_rows))
        report["inline_json_array"] = {
            f"at_{rows}_rows": inline_full,
            f"at_{args.inline_rows}_rows": await guarded(
                name, measure(name, read, pids, repeats=repeats, expected_rows=args.inline_rows)
            ),
        }
    return report


SERVICE_CASES = (
    # label, Accept, disposition asked in the body
    ("json", "application/json", "EXTERNAL_LINKS"),
    ("ndjson", "application/x-ndjson", None),
    ("csv", "text/csv", None),
)


async def service_cases(
    wport: int, warehouse: ChildProcess, result_format: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Case 1 through the service: each response format on a freshly started service process.

    A fresh process per case keeps one case's leftovers (a buffered 1M-row JSON document never
    fully returns its memory to the OS) out of the next case's RSS.
    """
    sql = wide_sql(args.rows)
    report: dict[str, Any] = {}
    for label, accept, disposition in SERVICE_CASES:
        async with running_service(wport, result_format) as (sport, service_pid):
            pids = {"service": service_pid, "warehouse": warehouse.pid}
            async with aiohttp.ClientSession(
                f"http://127.0.0.1:{sport}", timeout=REQUEST_TIMEOUT
            ) as session:
                if label == "json":
                    report["json_default_disposition"] = await guarded(
                        "probe", probe_status(session, sql)
                    )
                name = f"service {result_format} {label}"
                read = partial(service_read, session, sql, accept, disposition=disposition)
                report[label] = await guarded(
                    name,
                    measure(name, read, pids, repeats=args.repeats, expected_rows=args.rows),
                )
    return report


CASES = ("arrow", "large", "latency", "lsql")
ISSUE12_SERVICE_CASES = (("arrow", ARROW_MEDIA), ("ndjson", "application/x-ndjson"))


async def arrow_cases(
    wport: int, warehouse: ChildProcess, args: argparse.Namespace
) -> dict[str, Any]:
    """Issue 12 in one run: the raw Arrow chunks, the service's Arrow stream and its NDJSON
    stream (one fresh service each, with the default EXTERNAL_LINKS_FORMAT, ARROW_STREAM), then
    lsql, all on the seven-column statement, and the issue's targets.

    The three are run in turns (raw, Arrow, NDJSON, raw, ...) so that a machine whose load
    drifts during the run weighs on each alike; each keeps its own runs and RSS peaks.
    """
    sql, rows, repeats = seven_sql(args.rows), args.rows, args.repeats
    report: dict[str, Any] = {"statement": sql, "rows": rows, "load_average_before": _load()}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                f"http://127.0.0.1:{wport}", headers=auth, timeout=REQUEST_TIMEOUT
            )
        )
        bare = await stack.enter_async_context(aiohttp.ClientSession(timeout=REQUEST_TIMEOUT))
        reads: dict[str, tuple[Callable[[], Awaitable[Read]], dict[str, int]]] = {
            "raw_arrow_download": (
                partial(baseline_external, session, bare, sql, "ARROW_STREAM"),
                {"warehouse": warehouse.pid},
            )
        }
        sources = [("", None)]
        if args.before_source:
            sources.append(("_before", args.before_source))
            report["before_source"] = args.before_source
        for label, accept in ISSUE12_SERVICE_CASES:
            for suffix, source in sources:
                sport, service_pid = await stack.enter_async_context(
                    running_service(wport, "ARROW_STREAM", source)
                )
                client = await stack.enter_async_context(
                    aiohttp.ClientSession(f"http://127.0.0.1:{sport}", timeout=REQUEST_TIMEOUT)
                )
                reads[f"service_{label}{suffix}"] = (
                    partial(service_read, client, sql, accept),
                    {"service": service_pid, "warehouse": warehouse.pid},
                )
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in reads}
        for _ in range(repeats):
            for name, (read, pids) in reads.items():
                runs[name].append(
                    await guarded(
                        name, measure(f"issue12 {name}", read, pids, repeats=1, expected_rows=rows)
                    )
                )
        for name, measured in runs.items():
            report[name] = _merge_runs(measured)
    report["load_average_after"] = _load()
    if not args.skip_lsql:
        log("issue12 lsql")
        try:
            lsql = await asyncio.to_thread(lsql_case, wport, rows, repeats, sql, as_shipped=False)
            report["lsql"] = lsql["with_decimal_converter"]
        except (subprocess.SubprocessError, OSError) as exc:
            report["lsql"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    report["targets"] = arrow_targets(report)
    if args.before_source:
        report["targets_before"] = arrow_targets(report, "_before")
    return report


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _merge_runs(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """One report of several one-run `measure` reports: wall times, rows/s and RSS peaks."""
    ok = [m for m in measured if "error" not in m]
    if not ok:
        return measured[0] if measured else {"error": "no run"}
    walls = [m["wall_s"]["median"] for m in ok]
    merged: dict[str, Any] = {
        "rows": ok[0]["rows"],
        "body_bytes": ok[0]["body_bytes"],
        "wall_s": summarize(walls),
        "rows_per_s_median": round(ok[0]["rows"] / statistics.median(walls)),
        "errors": [m["error"] for m in measured if "error" in m],
        "rss_mib": {},
    }
    for extra in ("submit_s", "ttfb_s"):  # the statement's own time; the first byte's
        if extra in ok[0]:
            merged[extra] = summarize([m[extra]["median"] for m in ok])
    merged["cpu_s"] = {
        process: summarize([m["cpu_s"][process]["median"] for m in ok])
        for process in ok[0]["cpu_s"]
    }
    for process in ok[0]["rss_mib"]:
        peaks = [m["rss_mib"][process]["peak_max"] for m in ok]
        merged["rss_mib"][process] = {
            "before_first_run": ok[0]["rss_mib"][process]["before_median"],
            "peak_median": statistics.median(peaks),
            "peak_max": max(peaks),
            "peak_runs": peaks,
        }
    return merged


def arrow_targets(report: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    """Issue 12's targets: Arrow stream <= 1.2x and NDJSON <= 2.0x the raw Arrow download
    (median wall times), service peak RSS < 150 MB (10^6 bytes) for both streams; `suffix`
    "_before" for the services run from `--before-source`."""
    raw = dig(report, "raw_arrow_download", "wall_s", "median")

    def peak_mb(label: str) -> float | None:
        peak = dig(report, f"service_{label}{suffix}", "rss_mib", "service", "peak_max")
        return round(peak * 1.048576, 1) if isinstance(peak, float | int) else None

    def met(value: float | None, limit: float) -> bool | None:
        return None if value is None else value <= limit

    def under(value: float | None, limit: float) -> bool | None:
        return None if value is None else value < limit

    arrow = ratio(dig(report, f"service_arrow{suffix}", "wall_s", "median"), raw)
    ndjson = ratio(dig(report, f"service_ndjson{suffix}", "wall_s", "median"), raw)
    lsql = ratio(dig(report, "lsql", "fetch_all_s", "median"), raw)
    return {
        "raw_arrow_download_s": raw,
        "arrow_stream_over_raw": {"measured": arrow, "target": "<= 1.2", "met": met(arrow, 1.2)},
        "ndjson_over_raw": {"measured": ndjson, "target": "<= 2.0", "met": met(ndjson, 2.0)},
        "lsql_fetch_all_over_raw": {"measured": lsql, "target": "none (reported)"},
        "service_peak_rss_arrow_mb": {
            "measured": peak_mb("arrow"),
            "target": "< 150",
            "met": under(peak_mb("arrow"), 150),
        },
        "service_peak_rss_ndjson_mb": {
            "measured": peak_mb("ndjson"),
            "target": "< 150",
            "met": under(peak_mb("ndjson"), 150),
        },
    }


async def latency_cases(wport: int, args: argparse.Namespace) -> dict[str, Any]:
    """Case 3: SELECT 1 through a fresh service and straight to the warehouse, c=1 and c=32."""
    async with running_service(wport, "JSON_ARRAY") as (sport, _pid):
        return await _latency_cases(wport, sport, args)


async def _latency_cases(wport: int, sport: int, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    direct_body = {"warehouse_id": WAREHOUSE_ID, "statement": "SELECT 1", "wait_timeout": "5s"}
    # What the service itself sends for a buffered answer (row_limit and byte_limit make the
    # local warehouse do more work), so service minus this isolates the service's own cost.
    service_like_body = direct_body | {
        "on_wait_timeout": "CONTINUE",
        "disposition": "INLINE",
        "format": "JSON_ARRAY",
        "row_limit": 1_000_000,
        "byte_limit": 25 * 1024 * 1024,
        "query_tags": [{"key": "service", "value": "dbx-backend"}],
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    warehouse_url = f"http://127.0.0.1:{wport}"
    for concurrency, requests in ((1, args.requests_c1), (32, args.requests_c32)):
        warmup = max(50, concurrency * 4)
        for target, url, body, headers, check in (
            ("service", f"http://127.0.0.1:{sport}", {"sql": "SELECT 1"}, {}, _service_ok),
            ("direct", warehouse_url, direct_body, auth, _warehouse_ok),
            ("direct_service_body", warehouse_url, service_like_body, auth, _warehouse_ok),
        ):
            key = f"{target}_c{concurrency}"
            log(f"latency {key}: {requests} requests")
            report[key] = await guarded(
                key,
                load(
                    url,
                    body,
                    headers,
                    requests=requests,
                    concurrency=concurrency,
                    warmup=warmup,
                    check=check,
                ),
            )
        service = report[f"service_c{concurrency}"]
        for direct_key, added_key in (("direct", "added"), ("direct_service_body", "added_own")):
            direct = report[f"{direct_key}_c{concurrency}"]
            if "p50_ms" in service and "p50_ms" in direct:
                report[f"{added_key}_c{concurrency}"] = {
                    "p50_ms": round(service["p50_ms"] - direct["p50_ms"], 3),
                    "p99_ms": round(service["p99_ms"] - direct["p99_ms"], 3),
                }
    return report


def ratio(numerator: Any, denominator: Any) -> float | None:
    """numerator / denominator rounded, or None when either is missing."""
    if not isinstance(numerator, int | float) or not isinstance(denominator, int | float):
        return None
    return round(numerator / denominator, 3) if denominator else None


def dig(report: dict[str, Any], *path: str) -> Any:
    """report[path[0]][path[1]]..., or None where a case failed."""
    node: Any = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def default_external_format() -> str:
    """The service's default EXTERNAL_LINKS_FORMAT, read from its settings model."""
    from dbx_backend.config import Settings

    return str(Settings.model_fields["external_links_format"].default)


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's four targets for the service's default format: measured, target, met.

    The stream is compared with the raw JSON_ARRAY chunks (the same rows as JSON text, which is
    what the service answers) and, alongside, with the raw chunks of the format it fetched.
    """
    fmt = default_external_format()
    other = "JSON_ARRAY" if fmt == "ARROW_STREAM" else "ARROW_STREAM"
    large = report["large_result"]
    baseline = dig(large, "baseline", "external_links_json_array", "wall_s", "median")
    same_format = dig(large, "baseline", f"external_links_{fmt.lower()}", "wall_s", "median")
    lsql_rate = dig(report, "lsql", "with_decimal_converter", "rows_per_s_median")

    def measures(name: str) -> dict[str, Any]:
        ndjson = dig(large, f"service_{name.lower()}", "ndjson") or {}
        peak = dig(ndjson, "rss_mib", "service", "peak_max")
        return {
            "ndjson_wall_over_raw_json_array_baseline": ratio(
                dig(ndjson, "wall_s", "median"), baseline
            ),
            "service_peak_rss_streaming_1m_rows_mb": (
                round(peak * 1.048576, 1) if isinstance(peak, float | int) else None
            ),
            "rows_per_s_over_lsql_ndjson": ratio(dig(ndjson, "rows_per_s_median"), lsql_rate),
        }

    ours = measures(fmt)
    stream_ratio = ours["ndjson_wall_over_raw_json_array_baseline"]
    peak_mb = ours["service_peak_rss_streaming_1m_rows_mb"]
    over_lsql = ours["rows_per_s_over_lsql_ndjson"]
    ours_json = dig(large, f"service_{fmt.lower()}", "json", "rows_per_s_median")
    ndjson_wall = dig(large, f"service_{fmt.lower()}", "ndjson", "wall_s", "median")
    added = dig(report, "small_query", "added_c1", "p50_ms")
    added_own = dig(report, "small_query", "added_own_c1", "p50_ms")

    def met(value: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if value is None else ok(value)

    return {
        "measured_with_external_links_format": f"{fmt} (the service's default)",
        f"same_measures_with_{other.lower()}": measures(other),
        "ndjson_wall_over_raw_baseline": {
            "measured": stream_ratio,
            "over_raw_chunks_of_the_same_format": ratio(ndjson_wall, same_format),
            "target": "<= 1.5 (service NDJSON vs the raw JSON_ARRAY chunks of the same result)",
            "met": met(stream_ratio, lambda v: v <= 1.5),
        },
        "service_peak_rss_streaming_1m_rows_mb": {
            "measured": peak_mb,
            "target": "< 150 (MB = 10^6 bytes; highest peak of the NDJSON runs)",
            "met": met(peak_mb, lambda v: v < 150),
        },
        "rows_per_s_over_lsql_ndjson": {
            "measured": over_lsql,
            "target": ">= 3",
            "met": met(over_lsql, lambda v: v >= 3),
        },
        "rows_per_s_over_lsql_json": {
            "measured": ratio(ours_json, lsql_rate),
            "target": ">= 3 (reported alongside; the target names no format)",
            "met": met(ratio(ours_json, lsql_rate), lambda v: v >= 3),
        },
        "added_p50_latency_select1_c1_ms": {
            "measured": added,
            "own_overhead_vs_direct_call_with_the_same_body": added_own,
            "target": "< 2",
            "met": met(added, lambda v: v < 2),
        },
    }


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    """Service over baseline wall-time ratios (medians), each format over its own raw chunks."""
    large = report["large_result"]
    out: dict[str, float | None] = {}
    for fmt in ("json_array", "arrow_stream"):
        base = dig(large, "baseline", f"external_links_{fmt}", "wall_s", "median")
        for case, _accept, _disposition in SERVICE_CASES:
            wall = dig(large, f"service_{fmt}", case, "wall_s", "median")
            out[f"service_{fmt}.{case}"] = ratio(wall, base)
    json_base = dig(large, "baseline", "external_links_json_array", "wall_s", "median")
    arrow_ndjson = dig(large, "service_arrow_stream", "ndjson", "wall_s", "median")
    out["service_arrow_stream.ndjson_over_json_array_baseline"] = ratio(arrow_ndjson, json_base)
    return out


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Start the processes, run every case, stop the processes (even on error)."""
    started = time.perf_counter()
    wport = free_port()
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
        },
        "statement": wide_sql(args.rows),
        "rows": args.rows,
        "repeats": args.repeats,
        "service_env": {
            fmt: {k: v for k, v in service_env(0, 0, fmt).items() if "PORT" not in k}
            | {"DATABRICKS_TOKEN": "(the local warehouse token)"}
            for fmt in ("JSON_ARRAY", "ARROW_STREAM")
        },
        "notes": [
            "All processes share the machine's cores: warehouse, service, and this client.",
            "Wall times include the warehouse running the statement (see submit_s).",
            "The baseline downloads chunks one at a time and never parses them; the service"
            " downloads DOWNLOAD_WINDOW (default 4) at a time and converts every value.",
            "MAX_RESULT_ROWS=1000000 and MAX_RESULT_BYTES=1 GiB so the buffered JSON case"
            " returns the whole result; it asks for disposition EXTERNAL_LINKS because INLINE"
            " is capped at 25 MiB (see json_default_disposition).",
            "Each service case runs on a freshly started service process (rss_before = idle).",
            "lsql's rows/s is timed around fetch_all inside its process (start-up excluded).",
        ],
        "large_result": {},
    }
    cases = set(args.cases)
    with start_warehouse(wport) as warehouse:
        wait_until_ready(warehouse, wport)
        log(f"warehouse ready on port {wport}")
        if "arrow" in cases:
            report["issue12_arrow_and_ndjson"] = await arrow_cases(wport, warehouse, args)
        if "large" in cases:
            large = report["large_result"]
            large["baseline"] = await baseline_cases(wport, {"warehouse": warehouse.pid}, args)
            for fmt in ("JSON_ARRAY", "ARROW_STREAM"):
                large[f"service_{fmt.lower()}"] = await service_cases(wport, warehouse, fmt, args)
        if "latency" in cases:
            report["small_query"] = await guarded("latency", latency_cases(wport, args))
        if "lsql" in cases and not args.skip_lsql:
            log("lsql case")
            try:
                report["lsql"] = await asyncio.to_thread(lsql_case, wport, args.rows, args.repeats)
            except (subprocess.SubprocessError, OSError) as exc:
                report["lsql"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    if "large" in cases:
        report["ratios_service_over_baseline"] = ratios(report)
        report["targets"] = targets(report)
    report["total_s"] = round(time.perf_counter() - started, 1)
    return report


def main() -> int:
    """Parse options, run, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--inline-rows", type=int, default=200_000, help="fits the INLINE cap")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests-c1", type=int, default=500)
    parser.add_argument("--requests-c32", type=int, default=2000)
    parser.add_argument("--skip-lsql", action="store_true")
    parser.add_argument(
        "--before-source",
        help="issue 12's case also runs services from this source tree (an export of another "
        "commit: git archive <commit> dbx_backend | tar -x -C DIR), in the same turns, as "
        "service_arrow_before and service_ndjson_before, with their targets_before",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=CASES,
        default=list(CASES),
        help="which cases to run (default: all); 'arrow' is issue 12's",
    )
    args = parser.parse_args()
    report = asyncio.run(run_all(args))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
