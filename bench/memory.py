"""Memory benchmark: the service's peak RSS while it builds buffered JSON answers.

    .venv/bin/python bench/memory.py > memory-report.json

Starts the local warehouse (`dbx-backend warehouse`) and, per case, a fresh `dbx-backend serve`
on free loopback ports with the service's defaults, prints one JSON document on stdout
(progress on stderr) and stops every process at the end, also on error.

* one answer per chunk format: one buffered `POST /api/query` of 100,000 rows x 7 mixed
  columns, INLINE (the default) and through EXTERNAL_LINKS as JSON_ARRAY and ARROW_STREAM:
  peak RSS over idle, divided by the body's size;
* 1, 16 and 32 such requests at once (each a distinct statement, so none coalesce), with the
  default `MEMORY_BUDGET_MB` and with `MEMORY_BUDGET_MB=256`: peak RSS, statuses, and what
  `/metrics` says of the budget.

"Idle" is the service's RSS after one warm-up request of the same shape over 10 rows (code
loaded, no data held), taken just before the case starts; `one_answer_after_one` repeats the
one-answer cases after a full-size warm-up (the steady state: what the first answer after
start grows once, thread pool and allocator pools, is then part of idle, as is its cached
body).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
from harness import MIB, ChildProcess, RssSampler, child_env, free_port, log, venv_script

TOKEN = "dapi-local"  # the local warehouse's fake token, not a secret
WAREHOUSE_ID = "local"
STATEMENTS = "/api/2.0/sql/statements"
TIMEOUT = aiohttp.ClientTimeout(total=600, sock_connect=10)
# Targets of issue 13.
ONE_ANSWER_OVER_IDLE = 2.0
C32_PEAK_MIB = 500.0

# Seven columns of mixed types; `id <> -1 - {tag}` keeps every request's rows identical while
# making each statement distinct, so concurrent requests neither coalesce nor hit the cache.
SQL = (
    "SELECT id,"
    " CAST(id AS DOUBLE) * 1.5 AS dbl,"
    " CAST(id / 100 AS DECIMAL(18,2)) AS dec,"
    " concat('row-', id) AS str,"
    " CAST(date_add(DATE'2020-01-01', CAST(id % 1000 AS INT)) AS DATE) AS dt,"
    " timestampadd(SECOND, id, TIMESTAMP'2020-01-01 00:00:00') AS ts,"
    " id % 2 = 0 AS flag"
    " FROM range({rows}) AS t(id) WHERE id <> -1 - {tag}"
)
FORMATS = {
    # case name -> (request disposition, EXTERNAL_LINKS_FORMAT)
    "inline_json_array": ("INLINE", "ARROW_STREAM"),
    "links_json_array": ("EXTERNAL_LINKS", "JSON_ARRAY"),
    "links_arrow_stream": ("EXTERNAL_LINKS", "ARROW_STREAM"),
}


def start_warehouse(port: int) -> ChildProcess:
    argv = [venv_script("dbx-backend"), "warehouse", "--port", str(port), "--token", TOKEN]
    return ChildProcess("warehouse", argv, child_env({}))


# The service's settings besides the case's own: its defaults, but a query timeout long enough
# that a loaded machine shows slowness as time, not as 504s (memory is measured here).
SERVICE_ENV = {"LOG_LEVEL": "WARNING", "QUERY_TIMEOUT_S": "300"}


def start_service(
    wport: int, port: int, env: dict[str, str], source: str | None = None
) -> ChildProcess:
    full = child_env(
        {
            "DATABRICKS_HOST": f"http://127.0.0.1:{wport}",
            "DATABRICKS_HTTP_PATH": f"/sql/1.0/warehouses/{WAREHOUSE_ID}",
            "DATABRICKS_TOKEN": TOKEN,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            **SERVICE_ENV,
            **env,
            **({"PYTHONPATH": source} if source else {}),
        }
    )
    return ChildProcess("service", [venv_script("dbx-backend"), "serve"], full)


async def post_query(
    session: aiohttp.ClientSession, url: str, rows: int, tag: int, disposition: str
) -> dict[str, Any]:
    """One buffered answer: status, body size, rows, and the error code of a refusal."""
    body = {"sql": SQL.format(rows=rows, tag=tag), "disposition": disposition}
    started = time.perf_counter()
    try:
        async with session.post(url, json=body) as response:
            raw = await response.read()
            status, retry_after = response.status, response.headers.get("Retry-After")
    except aiohttp.ClientError as exc:  # a dropped connection is a result too
        return {"status": "dropped", "error": type(exc).__name__}
    outcome: dict[str, Any] = {
        "status": status,
        "bytes": len(raw),
        "seconds": round(time.perf_counter() - started, 3),
    }
    answer = orjson.loads(raw)
    if status == 200:
        outcome["rows"] = answer["row_count"]
        outcome["truncated"] = answer["truncated"]
    else:
        outcome["code"] = answer.get("error", {}).get("code")
        outcome["retry_after"] = retry_after
    return outcome


def memory_metrics(text: str) -> dict[str, float]:
    """The service's memory-budget lines from `/metrics` (none before issue 13)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("dbx_memory", "dbx_cache_bytes")):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


async def case(
    wport: int,
    *,
    concurrency: int,
    rows: int,
    disposition: str,
    env: dict[str, str],
    source: str | None = None,
    warm_rows: int = 10,
) -> dict[str, Any]:
    """A fresh service, one warm-up of `warm_rows`, then `concurrency` buffered answers at
    once."""
    sport = free_port()
    with start_service(wport, sport, env, source) as service:
        await asyncio.to_thread(
            service.wait_http, f"http://127.0.0.1:{sport}/health", ok_statuses={200}
        )
        url = f"http://127.0.0.1:{sport}/api/query"
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session:
            warm = await post_query(session, url, warm_rows, 999_999, disposition)
            if warm["status"] != 200:
                raise RuntimeError(f"warm-up failed: {warm} {service.stderr_tail()}")
            await asyncio.sleep(1.0)
            started = time.perf_counter()
            with RssSampler({"service": service.pid}) as rss:
                each = [post_query(session, url, rows, t, disposition) for t in range(concurrency)]
                outcomes = await asyncio.gather(*each)
            wall_s = time.perf_counter() - started
            async with session.get(f"http://127.0.0.1:{sport}/metrics") as response:
                metrics = memory_metrics(await response.text())
        idle, peak = rss.before["service"], rss.peak["service"]
        bodies = [o["bytes"] for o in outcomes if o["status"] == 200]
        body = max(bodies) if bodies else 0
        return {
            "concurrency": concurrency,
            "rows": rows,
            "warm_up_rows": warm_rows,
            "disposition": disposition,
            "env": env,
            "idle_rss_mib": round(idle / MIB, 1),
            "peak_rss_mib": round(peak / MIB, 1),
            "peak_over_idle_mib": round((peak - idle) / MIB, 1),
            "body_mib": round(body / MIB, 2),
            "peak_over_idle_per_body": round((peak - idle) / body, 2) if body else None,
            "wall_s": round(wall_s, 2),
            "statuses": dict(Counter(str(o["status"]) for o in outcomes)),
            "codes": dict(Counter(o["code"] for o in outcomes if "code" in o)),
            "refusals_without_retry_after": sum(
                1 for o in outcomes if o["status"] == 503 and not o.get("retry_after")
            ),
            "truncated": sum(1 for o in outcomes if o.get("truncated")),
            "rows_per_answer": sorted({o["rows"] for o in outcomes if "rows" in o}),
            "max_request_s": max(o.get("seconds", 0.0) for o in outcomes),
            "metrics_after": metrics,
        }


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "label": args.label,
        "source": args.source or "installed package",
        "rows": args.rows,
        "service_env": SERVICE_ENV,
    }
    wport = free_port()
    with start_warehouse(wport) as warehouse:
        warehouse.wait_http(f"http://127.0.0.1:{wport}{STATEMENTS}/none", ok_statuses={401, 404})
        for group, warm_rows in (("one_answer", 10), ("one_answer_after_one", args.rows)):
            report[group] = {}
            for name, (disposition, links_format) in FORMATS.items():
                log(f"{group}: {name}")
                report[group][name] = await case(
                    wport,
                    concurrency=1,
                    rows=args.rows,
                    disposition=disposition,
                    env={"EXTERNAL_LINKS_FORMAT": links_format},
                    source=args.source,
                    warm_rows=warm_rows,
                )
        budgets = {"default_budget": {}, "budget_256": {"MEMORY_BUDGET_MB": "256"}}
        for budget, env in budgets.items():
            for concurrency in args.concurrency:
                log(f"{budget}: {concurrency} at once")
                report.setdefault(budget, {})[f"c{concurrency}"] = await case(
                    wport,
                    concurrency=concurrency,
                    rows=args.rows,
                    disposition="INLINE",
                    env=env,
                    source=args.source,
                )
    report["targets"] = targets(report)
    return report


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Issue 13's targets with the measured figures (one answer: after start and steady)."""
    found: dict[str, Any] = {}
    for group in ("one_answer", "one_answer_after_one"):
        per_body = {
            name: result["peak_over_idle_per_body"] for name, result in report[group].items()
        }
        found[f"{group}_peak_over_idle_at_most_2x_body"] = {
            "measured": per_body,
            "met": all(v is not None and v <= ONE_ANSWER_OVER_IDLE for v in per_body.values()),
        }
    c32 = report.get("default_budget", {}).get("c32")
    found["c32_default_budget_peak_under_500_mib"] = {
        "measured": c32["peak_rss_mib"] if c32 else None,
        "met": bool(c32) and c32["peak_rss_mib"] < C32_PEAK_MIB,
    }
    found["every_request_200_or_503_with_retry_after"] = {
        "met": all(
            set(result["statuses"]) <= {"200", "503"} and not result["refusals_without_retry_after"]
            for group in ("default_budget", "budget_256")
            for result in report.get(group, {}).values()
        )
    }
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 32]
    )
    parser.add_argument("--label", default="", help="a note kept in the report (e.g. the commit)")
    parser.add_argument(
        "--source",
        help="run the service from this source tree (an export of another commit, for "
        "before/after figures on one machine) instead of the installed package",
    )
    args = parser.parse_args()
    report = asyncio.run(run_all(args))
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
