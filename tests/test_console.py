"""The dev console's routes: when they exist, what they serve, and the policy they serve it with.

What the page does in a browser is tested in test_console_browser.py.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.api.console import CONSOLE_FILES, CONTENT_SECURITY_POLICY, read_assets
from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from tests.conftest import TEST_ENV
from tests.devprocess import run_dev

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
ROOT = Path(__file__).resolve().parent.parent


async def client_for(aiohttp_client: MakeClient, **env: str) -> Client:
    return await aiohttp_client(create_app(load_settings({**TEST_ENV, **env}, env_file=None)))


async def test_serve_has_no_console_unless_console_is_true(aiohttp_client: MakeClient) -> None:
    client = await client_for(aiohttp_client)

    for path in ("/", "/console/console.js"):
        response = await client.get(path)
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "NOT_FOUND"


def test_console_is_off_by_default_and_dev_turns_it_on_unless_told_otherwise() -> None:
    assert load_settings(TEST_ENV, env_file=None).console is False
    dev_default = {"CONSOLE": "true"}
    assert load_settings(TEST_ENV, env_file=None, defaults=dev_default).console is True
    told = {**TEST_ENV, "CONSOLE": "false"}
    assert load_settings(told, env_file=None, defaults=dev_default).console is False


def test_dev_serves_the_console_at_the_root_and_says_where(tmp_path: Path) -> None:
    with run_dev(tmp_path) as dev:
        url = f"http://127.0.0.1:{dev.port}/"
        with urllib.request.urlopen(url, timeout=30) as response:
            policy = response.headers["Content-Security-Policy"]
            page = response.read().decode()

    assert policy == CONTENT_SECURITY_POLICY
    assert '<script type="module" src="/console/console.js">' in page
    assert f"console:          http://localhost:{dev.port}/" in dev.output()


@pytest.mark.parametrize("name", sorted(CONSOLE_FILES))
async def test_every_console_file_is_served_with_its_type_and_a_strict_policy(
    aiohttp_client: MakeClient, name: str
) -> None:
    client = await client_for(aiohttp_client, CONSOLE="true")

    response = await client.get("/" if name == "index.html" else f"/console/{name}")

    assert response.status == 200
    assert response.headers["Content-Type"] == CONSOLE_FILES[name]
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert len(await response.read()) > 0


def test_the_policy_allows_nothing_inline_and_nothing_from_elsewhere() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src", "img-src"):
        assert directives[name] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_the_page_has_no_inline_script_or_style_and_loads_only_served_files() -> None:
    assets = {name: asset.body.decode() for name, asset in read_assets().items()}
    page = assets["index.html"]
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert "<style" not in page
    assert re.findall(r"\sstyle=|\son[a-z]+=", page) == []
    loaded = re.findall(r'(?:src|href)="/console/([^"]+)"', page)
    imported = [m for text in assets.values() for m in re.findall(r'from "\./([^"]+)"', text)]
    assert loaded
    assert imported
    assert set(loaded) | set(imported) <= set(CONSOLE_FILES)


def test_no_console_file_refers_to_another_host() -> None:
    for name, asset in read_assets().items():
        urls = re.findall(r"\b(?:https?:)?//[A-Za-z0-9.-]+", asset.body.decode())
        assert [u for u in urls if u != "http://www.w3.org"] == [], name  # the SVG namespace


def test_the_package_ships_every_console_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["dbx_backend"]
    for name in CONSOLE_FILES:
        assert any(fnmatch.fnmatch(f"api/static/{name}", p) for p in patterns), name


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/console/unknown.js", id="unknown"),
        pytest.param("/console/index.html", id="page-only-at-root"),
        pytest.param("/console/..%2Fconsole.py", id="traversal"),
        pytest.param("/console/%2E%2E%2F%2E%2E%2Fconfig.py", id="encoded-traversal"),
    ],
)
async def test_anything_but_a_console_file_is_404(aiohttp_client: MakeClient, path: str) -> None:
    client = await client_for(aiohttp_client, CONSOLE="true")

    response = await client.get(path)

    assert response.status == 404
    assert (await response.json())["error"]["code"] == "NOT_FOUND"


async def test_a_known_version_is_revalidated_with_304(aiohttp_client: MakeClient) -> None:
    client = await client_for(aiohttp_client, CONSOLE="true")
    first = await client.get("/console/console.js")

    again = await client.get(
        "/console/console.js", headers={"If-None-Match": first.headers["ETag"]}
    )

    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


async def test_with_api_keys_the_page_loads_but_its_api_calls_need_the_key(
    aiohttp_client: MakeClient,
) -> None:
    client = await client_for(aiohttp_client, CONSOLE="true", API_KEYS="k-0123456789")

    page = await client.get("/")
    refused = await client.get("/api/queries")
    allowed = await client.get("/api/queries", headers={"Authorization": "Bearer k-0123456789"})

    api_js = await (await client.get("/console/api.js")).text()
    assert page.status == 200
    assert "sessionStorage" in api_js  # the key lives as long as the tab, never longer
    assert "localStorage" not in api_js
    assert refused.status == 401
    assert allowed.status == 200
