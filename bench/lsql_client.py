"""Read one statement's whole result with databricks-sdk + databricks-labs-lsql's `fetch_all`.

Runs inside the benchmark's own environment (`bench/.venv-lsql`, from requirements-lsql.txt),
never the service's. Prints one JSON object: rows, seconds, the SDK's warnings, and the error
when the client cannot read the result. (Peak RSS is sampled from outside: on Linux `ru_maxrss`
keeps the forking parent's high-water mark across exec, so it would report the caller's.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any


class _WarningCollector(logging.Handler):
    """Keeps what the SDK and lsql warn about (for example a failed host metadata lookup)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}"[:300])


def read_all(args: argparse.Namespace) -> dict[str, Any]:
    """Run the statement through `StatementExecutionExt.fetch_all` and count the rows."""
    from databricks.labs.lsql.core import (  # type: ignore[import-not-found]
        StatementExecutionExt,
    )
    from databricks.sdk import WorkspaceClient  # type: ignore[import-not-found]
    from databricks.sdk.service.sql import (  # type: ignore[import-not-found]
        ColumnInfoTypeName,
        Disposition,
    )

    ws = WorkspaceClient(host=args.host, token=args.token, auth_type="pat")
    disposition = None if args.disposition == "DEFAULT" else Disposition(args.disposition)
    see = StatementExecutionExt(ws, warehouse_id=args.warehouse_id, disposition=disposition)
    if args.decimal_converter:
        # lsql has no DECIMAL converter; the smallest faithful addition is decimal.Decimal.
        import decimal

        see._type_converters[ColumnInfoTypeName.DECIMAL] = decimal.Decimal
    rows = 0
    started = time.perf_counter()
    for _row in see.fetch_all(args.sql):
        rows += 1
    return {"rows": rows, "seconds": round(time.perf_counter() - started, 3)}


def main() -> int:
    """Parse options, read the result, print the JSON line; exit 0 even when lsql fails."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--warehouse-id", required=True)
    parser.add_argument("--sql", required=True)
    parser.add_argument(
        "--disposition", choices=("DEFAULT", "INLINE", "EXTERNAL_LINKS"), default="DEFAULT"
    )
    parser.add_argument("--decimal-converter", action="store_true")
    args = parser.parse_args()
    collector = _WarningCollector()
    logging.getLogger().addHandler(collector)
    logging.getLogger().setLevel(logging.WARNING)
    try:
        report = read_all(args)
    except Exception as exc:
        report = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    report["warnings"] = collector.messages
    print(json.dumps(report), file=sys.stdout, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
