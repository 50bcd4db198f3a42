"""CORS over loopback HTTP: the web app's origins pass; a preflight from another origin is told
why it failed and which variable to change."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dbx_backend.api.cors import shown
from dbx_backend.app import create_app
from dbx_backend.config import load_settings
from tests.conftest import TEST_ENV

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
WEB_APP = "http://localhost:3000"


async def make(aiohttp_client: MakeClient, **env: str) -> Client:
    return await aiohttp_client(create_app(load_settings({**TEST_ENV, **env}, env_file=None)))


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method}


@pytest.mark.parametrize("path", ["/api/query", "/api/statements", "/health", "/no-such-route"])
async def test_a_preflight_from_another_origin_is_refused_naming_it_and_the_variable(
    aiohttp_client: MakeClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    client = await make(aiohttp_client)
    caplog.set_level(logging.INFO, logger="dbx_backend")

    response = await client.options(path, headers=preflight("https://evil.example"))
    error = (await response.json())["error"]

    assert response.status == 403
    assert error["code"] == "ORIGIN_NOT_ALLOWED"
    assert "'https://evil.example'" in error["message"]
    assert "CORS_ALLOW_ORIGINS" in error["message"]
    assert error["retryable"] is False
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert "Access-Control-Allow-Origin" not in response.headers
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'https://evil.example'" in line for line in warnings)


async def test_the_web_apps_preflight_keeps_working(aiohttp_client: MakeClient) -> None:
    client = await make(aiohttp_client, CORS_ALLOW_ORIGINS="http://a.test, http://b.test")

    allowed = await client.options("/api/query", headers=preflight("http://b.test"))
    refused = await client.options("/api/query", headers=preflight("http://c.test"))

    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://b.test"
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert refused.status == 403


async def test_a_wildcard_allows_every_origin(aiohttp_client: MakeClient) -> None:
    client = await make(aiohttp_client, CORS_ALLOW_ORIGINS="*")

    response = await client.options("/api/query", headers=preflight("https://any.example"))

    assert response.status == 200
    assert "Access-Control-Allow-Origin" in response.headers


async def test_an_origin_that_only_differs_in_port_is_another_origin(
    aiohttp_client: MakeClient,
) -> None:
    client = await make(aiohttp_client)

    response = await client.options("/api/query", headers=preflight("http://localhost:3001"))

    assert response.status == 403
    assert (await response.json())["error"]["code"] == "ORIGIN_NOT_ALLOWED"


async def test_a_simple_request_from_another_origin_is_served_without_cors_headers(
    aiohttp_client: MakeClient,
) -> None:
    client = await make(aiohttp_client)

    response = await client.get("/health", headers={"Origin": "https://evil.example"})

    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_a_hostile_origin_cannot_forge_a_log_line_or_flood_the_message(
    aiohttp_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make(aiohttp_client)
    caplog.set_level(logging.WARNING, logger="dbx_backend")
    # Line breaks that are not CR/LF get past HTTP parsers (ASCII controls do not).
    origin = "https://x.example\u2028forged INFO line\x85" + "a" * 5000
    # aiohttp's client refuses such headers; a hostile client sends them raw.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    request = (
        f"OPTIONS /api/query HTTP/1.1\r\nHost: {client.host}\r\nOrigin: {origin}\r\n"
        "Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
    )
    writer.write(request.encode())
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    message = orjson.loads(body)["error"]["message"]

    assert head.startswith(b"HTTP/1.1 403")
    assert len(message) < 400
    line = next(r.getMessage() for r in caplog.records if "CORS preflight" in r.getMessage())
    assert not {"\u2028", "\x85"} & set(line)
    assert "'https://x.example\\u2028forged INFO line\\x85aaa" in line
    assert len(line) < 400


async def test_an_allowed_origin_may_read_the_timing_and_the_csv_file_name(
    aiohttp_client: MakeClient,
) -> None:
    client = await make(aiohttp_client)

    response = await client.get("/health", headers={"Origin": WEB_APP})

    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Server-Timing", "Content-Disposition", "X-Request-ID", "Retry-After"} <= exposed
    assert response.headers["Timing-Allow-Origin"] == WEB_APP


async def test_other_origins_get_no_timing_allow_origin(aiohttp_client: MakeClient) -> None:
    client = await make(aiohttp_client)

    foreign = await client.get("/health", headers={"Origin": "https://evil.example"})
    no_origin = await client.get("/health")

    assert "Timing-Allow-Origin" not in foreign.headers
    assert "Timing-Allow-Origin" not in no_origin.headers


def test_shown_quotes_escapes_and_cuts() -> None:
    assert shown("http://a.test") == "'http://a.test'"
    assert shown("a\nb") == "'a\\nb'"
    assert shown("x" * 300).endswith("'...")
