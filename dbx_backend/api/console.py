"""The dev console: a static page at `/` that runs SQL through this service's public API.

On in `dbx-backend dev`, and in `serve` only with `CONSOLE=true`. The page and its files carry
no secret and need no key; the API calls the page makes are guarded like any other caller's
(it asks for the API key and keeps it in the tab's session storage). Files ship in the package
and are read once at start; every console response carries a strict Content-Security-Policy:
scripts, styles and connections from this origin only, nothing inline, no frames, no forms.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from dbx_backend.api.errors import NotFoundError

STATIC_PACKAGE = "dbx_backend.api"
STATIC_DIR = "static"
# Everything the page may load, by name; nothing else is ever read from disk.
CONSOLE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "grid.js": "text/javascript; charset=utf-8",
    "ndjson.js": "text/javascript; charset=utf-8",
    "timing.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidate each time (cheap: an ETag), so a new version shows on reload.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One console file, held in memory."""

    body: bytes
    content_type: str
    etag: str


CONSOLE_ASSETS: web.AppKey[dict[str, Asset]] = web.AppKey("console_assets")


def read_assets() -> dict[str, Asset]:
    """The console's files from the installed package (blocking: call it off the loop)."""
    folder = resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR)
    assets = {}
    for name, content_type in CONSOLE_FILES.items():
        body = folder.joinpath(name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[name] = Asset(body, content_type, etag)
    return assets


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


async def console_page(request: web.Request) -> web.Response:
    """`GET /`: the console's page."""
    return _answer(request, request.app[CONSOLE_ASSETS]["index.html"])


async def console_file(request: web.Request) -> web.Response:
    """`GET /console/{name}`: one of the page's scripts, styles or images."""
    name = request.match_info["name"]
    asset = request.app[CONSOLE_ASSETS].get(name)
    if asset is None or name == "index.html":
        raise NotFoundError(f"no console file {name!r}")
    return _answer(request, asset)


def setup_console_routes(app: web.Application) -> None:
    """Register the console's routes; its files are read once, when the app starts."""

    async def load_assets(app: web.Application) -> None:
        app[CONSOLE_ASSETS] = await asyncio.to_thread(read_assets)

    app.on_startup.append(load_assets)
    app.router.add_get("/", console_page, name="console")
    app.router.add_get("/console/{name}", console_file, name="console_file")
