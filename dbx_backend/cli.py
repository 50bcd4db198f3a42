"""The `dbx-backend` command: serve, dev, warehouse, openapi."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from dbx_backend import __version__
from dbx_backend.app import create_app
from dbx_backend.config import ConfigError, Settings, load_settings
from dbx_backend.logs import configure_logging

log = logging.getLogger("dbx_backend")
# Let in-flight requests finish this long on SIGTERM before they are cancelled.
SHUTDOWN_GRACE_S = 30.0


def run_service(app: web.Application, settings: Settings) -> None:
    """Serve `app` until SIGINT/SIGTERM; a client that disconnects cancels its request."""
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,  # our middleware writes one line per request
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_GRACE_S,
        print=None,
    )


def serve(args: argparse.Namespace) -> int:
    """Run the service on the configured warehouse."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"dbx-backend: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    log.info("dbx-backend %s listening on http://%s:%d", __version__, settings.host, settings.port)
    run_service(create_app(settings), settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="dbx-backend", description="A safe, fast HTTP service in front of Databricks SQL."
    )
    parser.add_argument("--version", action="version", version=f"dbx-backend {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the service (configured by the environment / .env)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dbx-backend` console script."""
    args = build_parser().parse_args(argv)
    handlers = {"serve": serve}
    return handlers[args.command](args)
