"""`dbx-backend warehouse`: run the local warehouse alone until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TextIO

from dbx_backend.localwarehouse.config import WarehouseConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `warehouse` subcommand's options."""
    defaults = WarehouseConfig()
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port, 0 for a free one (8765)")
    parser.add_argument("--token", default=defaults.token, help="bearer token to accept")
    parser.add_argument("--warehouse-id", default=defaults.warehouse_id, help="warehouse id")
    parser.add_argument(
        "--chunk-rows", type=int, default=defaults.chunk_rows, help="rows per result chunk"
    )
    parser.add_argument(
        "--data", type=Path, default=None, metavar="DIR", help="expose Parquet/CSV files as tables"
    )
    parser.add_argument(
        "--allowed-hosts",
        default="",
        metavar="NAMES",
        help="comma-separated Host names answered besides loopback ones (bound to loopback)",
    )
    parser.add_argument(
        "--admin",
        action="store_true",
        help="enable the admin routes /_admin/faults (fault injection) and /_admin/stop",
    )
    parser.add_argument(
        "--auto-stop-s",
        type=_seconds,
        default=defaults.auto_stop_s,
        metavar="N",
        help="idle seconds before the warehouse stops (0: never, the default)",
    )
    parser.add_argument(
        "--start-s",
        type=_seconds,
        default=defaults.start_s,
        metavar="N",
        help="how long a start lasts (STARTING), in seconds (default 0)",
    )
    parser.add_argument(
        "--stop-s",
        type=_seconds,
        default=defaults.stop_s,
        metavar="N",
        help="how long a stop lasts (STOPPING), in seconds (default 0)",
    )
    parser.add_argument(
        "--stopped",
        action="store_true",
        help="begin STOPPED: the first statement (or a start call) starts the warehouse",
    )
    parser.add_argument(
        "--oauth-client",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="an OAuth M2M client accepted by /oidc/v1/token (repeatable)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be 0 or more")
    return value


def config_from_args(args: argparse.Namespace) -> WarehouseConfig:
    """The warehouse configuration the parsed options describe."""
    clients = {}
    for pair in args.oauth_client:
        client_id, sep, secret = pair.partition(":")
        if not sep or not client_id or not secret:
            raise SystemExit("--oauth-client takes ID:SECRET")
        clients[client_id] = secret
    if args.data is not None and not args.data.is_dir():
        raise SystemExit(f"--data {args.data}: not a directory")
    return WarehouseConfig(
        host=args.host,
        port=args.port,
        token=args.token,
        warehouse_id=args.warehouse_id,
        chunk_rows=args.chunk_rows,
        data_dir=args.data,
        admin_enabled=args.admin,
        auto_stop_s=args.auto_stop_s,
        start_s=args.start_s,
        stop_s=args.stop_s,
        start_stopped=args.stopped,
        allowed_hosts=tuple(name.strip() for name in args.allowed_hosts.split(",") if name.strip()),
        oauth_clients=clients,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, after printing the settings a client needs; exit code."""
    return asyncio.run(serve(config_from_args(args), sys.stdout))


async def serve(config: WarehouseConfig, out: TextIO) -> int:
    """Run the warehouse until a stop signal arrives."""
    from dbx_backend.localwarehouse.server import LocalWarehouse  # DuckDB: only when it runs

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with LocalWarehouse(config) as warehouse:
            print(f"DATABRICKS_HOST={warehouse.url}", file=out)
            print(f"DATABRICKS_HTTP_PATH={warehouse.http_path}", file=out)
            print(f"DATABRICKS_TOKEN={config.token}", file=out)
            out.flush()
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0


def main() -> int:
    """Entry point for `python -m dbx_backend.localwarehouse.cli`."""
    parser = argparse.ArgumentParser(prog="dbx-backend warehouse", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
