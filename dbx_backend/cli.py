"""The `dbx-backend` command: serve, dev, warehouse, openapi."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from collections.abc import Callable, Sequence

import orjson
from aiohttp import web

from dbx_backend import __version__, serving
from dbx_backend.allocator import tune_allocator
from dbx_backend.app import create_app
from dbx_backend.config import ConfigError, Settings, load_settings
from dbx_backend.hosts import is_loopback
from dbx_backend.logs import configure_logging

log = logging.getLogger("dbx_backend")
DEV_CURL = (
    "curl -s http://localhost:{port}/api/query -H 'Content-Type: application/json' "
    '-d \'{{"sql": "SELECT pickup_zip, count(*) AS trips, round(avg(fare_amount), 2) AS '
    "avg_fare FROM samples.nyctaxi.trips GROUP BY pickup_zip ORDER BY trips DESC LIMIT 5\"}}'"
)


def warn_if_exposed(settings: Settings) -> None:
    """A service reachable from other machines without API keys runs anyone's SQL."""
    if not is_loopback(settings.host) and not settings.api_keys:
        log.warning(
            "WARNING: listening on %s with no API_KEYS: anyone who can reach port %d can run "
            "SQL with this service's Databricks identity. Set API_KEYS (see README).",
            settings.host,
            settings.port,
        )


def _settings(
    overrides: dict[str, str] | None = None, defaults: dict[str, str] | None = None
) -> Settings | None:
    try:
        return load_settings(overrides=overrides, defaults=defaults)
    except ConfigError as exc:
        print(f"dbx-backend: {exc}", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    """Run the service on the configured warehouse."""
    settings = _settings()
    if settings is None:
        return 2
    configure_logging(settings.log_level, settings.log_format)
    warn_if_exposed(settings)
    tune_allocator()
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    stop = serving.stop_signal()
    app = create_app(settings)

    def ready() -> None:
        log.info(
            "dbx-backend %s listening on http://%s:%d", __version__, settings.host, settings.port
        )
        if settings.console:
            log.info(
                "the dev console is on (CONSOLE=true): http://%s:%d/", settings.host, settings.port
            )

    return await _run(app, settings, stop, ready)


async def _run(
    app: web.Application, settings: Settings, stop: asyncio.Event, ready: Callable[[], None]
) -> int:
    """Serve until a stop signal; exit code 0 after a shutdown, 1 if the port is unusable."""
    try:
        await serving.serve(
            app,
            host=settings.host,
            port=settings.port,
            grace_s=settings.shutdown_grace_s,
            stop=stop,
            ready=ready,
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)  # the reason is the whole story: no traceback
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, reason)  # noqa: TRY400
        return 1
    return 0


def dev(args: argparse.Namespace) -> int:
    """Run the local warehouse and the service wired to it: no Databricks account needed."""
    try:
        from dbx_backend.localwarehouse import LocalWarehouse, WarehouseConfig
    except ImportError:
        print(
            "dbx-backend dev needs the local warehouse: pip install 'dbx-backend[local]'",
            file=sys.stderr,
        )
        return 2
    # A fresh token each run (never printed): only this process knows how to reach the
    # warehouse, so another program on the machine cannot run SQL on it unasked.
    token = args.token or f"dapi-local-{secrets.token_urlsafe(24)}"
    config = WarehouseConfig(host="127.0.0.1", port=args.warehouse_port, token=token)
    port = args.port or _settings_port()

    tune_allocator()

    async def run() -> int:
        stop = serving.stop_signal()
        # The warehouse outlives the service: the service's shutdown cancels its statements
        # through it, then the warehouse stops (cancelling whatever still runs).
        async with LocalWarehouse(config) as warehouse:
            settings = _settings(
                {
                    "DATABRICKS_HOST": warehouse.url,
                    "DATABRICKS_HTTP_PATH": warehouse.http_path,
                    "DATABRICKS_TOKEN": warehouse.config.token,
                    "DATABRICKS_WAREHOUSE_ID": "",
                    "DATABRICKS_CLIENT_ID": "",
                    "DATABRICKS_CLIENT_SECRET": "",
                    "HOST": args.host,
                    "PORT": str(port),
                    "LOG_FORMAT": "text",
                },
                defaults={"CONSOLE": "true"},  # CONSOLE=false in the environment turns it off
            )
            if settings is None:
                return 2
            configure_logging(settings.log_level, settings.log_format)
            warn_if_exposed(settings)

            def banner() -> None:
                print(f"local warehouse:  {warehouse.url}  (warehouse id {config.warehouse_id})")
                print(f"dbx-backend:      http://localhost:{settings.port}")
                if settings.console:
                    print(f"console:          http://localhost:{settings.port}/")
                origins = ", ".join(settings.cors_allow_origins) or "none"
                print(f"browser origins:  {origins}  (CORS_ALLOW_ORIGINS)")
                print("try:")
                print(f"  {DEV_CURL.format(port=settings.port)}")
                sys.stdout.flush()

            return await _run(create_app(settings), settings, stop, banner)

    return asyncio.run(run())


def _settings_port() -> int:
    """PORT from the environment or `.env`, without requiring the Databricks variables."""
    try:
        return load_settings(
            overrides={
                "DATABRICKS_HOST": "localhost",
                "DATABRICKS_WAREHOUSE_ID": "x",
                "DATABRICKS_TOKEN": "x",
            }
        ).port
    except ConfigError:
        return 4000


def warehouse(args: argparse.Namespace) -> int:
    """Run the local warehouse alone, for any Statement Execution API client."""
    from dbx_backend.localwarehouse.cli import run

    return run(args)


def openapi(args: argparse.Namespace) -> int:
    """Print the OpenAPI document."""
    from dbx_backend.api.openapi import openapi_document

    sys.stdout.write(orjson.dumps(openapi_document(), option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="dbx-backend", description="A safe, fast HTTP service in front of Databricks SQL."
    )
    parser.add_argument("--version", action="version", version=f"dbx-backend {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the service (configured by the environment / .env)")
    dev_parser = commands.add_parser(
        "dev", help="run the local warehouse and the service wired to it"
    )
    dev_parser.add_argument("--host", default="127.0.0.1", help="service address")
    dev_parser.add_argument("--port", type=int, default=0, help="service port (PORT, or 4000)")
    dev_parser.add_argument(
        "--warehouse-port", type=int, default=0, help="local warehouse port (default: any free)"
    )
    dev_parser.add_argument(
        "--token",
        default=None,
        help="local warehouse token (default: a random one per run, never printed)",
    )
    warehouse_parser = commands.add_parser(
        "warehouse", help="run the local warehouse alone (a Statement Execution API server)"
    )
    try:
        from dbx_backend.localwarehouse.cli import add_arguments
    except ImportError:
        pass  # without the [local] extra, `warehouse` explains what to install
    else:
        add_arguments(warehouse_parser)
    commands.add_parser("openapi", help="print the OpenAPI document of the service's API")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dbx-backend` console script."""
    args = build_parser().parse_args(argv)
    handlers = {"serve": serve, "dev": dev, "warehouse": warehouse, "openapi": openapi}
    return handlers[args.command](args)
