"""Token providers: personal access token and OAuth M2M against a mocked token endpoint."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from pydantic import SecretStr
from yarl import URL

from dbx_backend.config import Settings, load_settings
from dbx_backend.warehouse.auth import OAuthM2M, StaticToken, token_provider_for
from dbx_backend.warehouse.errors import TokenUnavailable
from tests.conftest import TEST_ENV, TEST_HOST, TEST_TOKEN, FakeClock

CLIENT_ID = "0a1b2c3d-service-principal"
CLIENT_SECRET = "dose-very-secret-client-secret-42"
DISCOVERY = f"{TEST_HOST}/oidc/.well-known/oauth-authorization-server"
TOKEN_URL = f"{TEST_HOST}/oidc/v1/token"
HOUR = 3600


class RecordedSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def token_body(access_token: str, expires_in: int = HOUR) -> dict[str, Any]:
    return {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in}


def calls(mocked: aioresponses, method: str, url: str) -> list[Any]:
    return list(mocked.requests.get((method, URL(url)), []))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def sleep() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
def oauth(session: aiohttp.ClientSession, clock: FakeClock, sleep: RecordedSleep) -> OAuthM2M:
    return OAuthM2M(
        session, TEST_HOST, CLIENT_ID, SecretStr(CLIENT_SECRET), clock=clock, sleep=sleep
    )


@pytest.fixture
def endpoint(mocked: aioresponses) -> aioresponses:
    """Discovery pointing at the workspace token endpoint."""
    mocked.get(DISCOVERY, payload={"token_endpoint": TOKEN_URL}, repeat=True)
    return mocked


async def test_static_token_sends_the_personal_access_token() -> None:
    provider = StaticToken(SecretStr("dapi-abc"))

    assert await provider.authorization() == "Bearer dapi-abc"


async def test_static_token_refresh_returns_the_same_value() -> None:
    provider = StaticToken(SecretStr("dapi-abc"))

    assert await provider.refresh("Bearer dapi-abc") == "Bearer dapi-abc"
    assert provider.refreshes == 0


async def test_token_request_uses_basic_client_auth_and_the_client_credentials_form(
    oauth: OAuthM2M, endpoint: aioresponses
) -> None:
    endpoint.post(TOKEN_URL, payload=token_body("tok-1"))

    header = await oauth.authorization()

    (call,) = calls(endpoint, "POST", TOKEN_URL)
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert call.kwargs["headers"]["Authorization"] == f"Basic {expected}"
    assert call.kwargs["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert call.kwargs["data"] == "grant_type=client_credentials&scope=all-apis"
    assert header == "Bearer tok-1"


async def test_token_endpoint_comes_from_discovery(oauth: OAuthM2M, mocked: aioresponses) -> None:
    custom = f"{TEST_HOST}/oidc/v2/custom-token"
    mocked.get(DISCOVERY, payload={"token_endpoint": custom})
    mocked.post(custom, payload=token_body("tok-custom"))

    assert await oauth.authorization() == "Bearer tok-custom"


async def test_token_endpoint_falls_back_when_discovery_is_missing(
    oauth: OAuthM2M, mocked: aioresponses
) -> None:
    mocked.get(DISCOVERY, status=404)
    mocked.post(TOKEN_URL, payload=token_body("tok-fallback"))

    assert await oauth.authorization() == "Bearer tok-fallback"


async def test_discovery_naming_another_host_is_refused(
    oauth: OAuthM2M, mocked: aioresponses
) -> None:
    mocked.get(DISCOVERY, payload={"token_endpoint": "https://attacker.example/token"})

    with pytest.raises(TokenUnavailable, match="another host"):
        await oauth.authorization()

    assert calls(mocked, "POST", "https://attacker.example/token") == []


async def test_token_is_fetched_once_for_twenty_concurrent_callers(
    oauth: OAuthM2M, endpoint: aioresponses
) -> None:
    endpoint.post(TOKEN_URL, payload=token_body("tok-1"), repeat=True)

    headers = await asyncio.gather(*(oauth.authorization() for _ in range(20)))

    assert set(headers) == {"Bearer tok-1"}
    assert len(calls(endpoint, "POST", TOKEN_URL)) == 1
    assert len(calls(endpoint, "GET", DISCOVERY)) == 1
    assert oauth.refreshes == 1


async def test_token_is_reused_within_its_lifetime(
    oauth: OAuthM2M, endpoint: aioresponses, clock: FakeClock
) -> None:
    endpoint.post(TOKEN_URL, payload=token_body("tok-1"))
    endpoint.post(TOKEN_URL, payload=token_body("tok-2"))
    await oauth.authorization()

    clock.now += HOUR - 301

    assert await oauth.authorization() == "Bearer tok-1"
    assert len(calls(endpoint, "POST", TOKEN_URL)) == 1


async def test_token_is_refreshed_five_minutes_before_expiry(
    oauth: OAuthM2M, endpoint: aioresponses, clock: FakeClock
) -> None:
    endpoint.post(TOKEN_URL, payload=token_body("tok-1"))
    endpoint.post(TOKEN_URL, payload=token_body("tok-2"))
    await oauth.authorization()

    clock.now += HOUR - 299

    assert await oauth.authorization() == "Bearer tok-2"
    assert oauth.refreshes == 2


async def test_short_lived_token_is_refreshed_at_half_its_lifetime(
    oauth: OAuthM2M, endpoint: aioresponses, clock: FakeClock
) -> None:
    endpoint.post(TOKEN_URL, payload=token_body("tok-1", expires_in=120))
    endpoint.post(TOKEN_URL, payload=token_body("tok-2", expires_in=120))
    await oauth.authorization()

    clock.now += 59
    before_half = await oauth.authorization()
    clock.now += 2
    after_half = await oauth.authorization()

    assert (before_half, after_half) == ("Bearer tok-1", "Bearer tok-2")


async def test_concurrent_refreshes_after_a_401_share_one_fetch(
    oauth: OAuthM2M, endpoint: aioresponses
) -> None:
    endpoint.post(TOKEN_URL, payload=token_body("tok-1"))
    endpoint.post(TOKEN_URL, payload=token_body("tok-2"))
    endpoint.post(TOKEN_URL, payload=token_body("tok-3"))
    rejected = await oauth.authorization()

    headers = await asyncio.gather(*(oauth.refresh(rejected) for _ in range(10)))

    assert set(headers) == {"Bearer tok-2"}
    assert len(calls(endpoint, "POST", TOKEN_URL)) == 2


async def test_refresh_returns_a_newer_token_without_fetching(
    oauth: OAuthM2M, endpoint: aioresponses
) -> None:
    endpoint.post(TOKEN_URL, payload=token_body("tok-2"))
    await oauth.authorization()

    header = await oauth.refresh("Bearer tok-1-already-replaced")

    assert header == "Bearer tok-2"
    assert len(calls(endpoint, "POST", TOKEN_URL)) == 1


async def test_transient_token_endpoint_failure_is_retried(
    oauth: OAuthM2M, endpoint: aioresponses, sleep: RecordedSleep
) -> None:
    endpoint.post(TOKEN_URL, status=503)
    endpoint.post(TOKEN_URL, exception=aiohttp.ClientConnectionError())
    endpoint.post(TOKEN_URL, payload=token_body("tok-1"))

    assert await oauth.authorization() == "Bearer tok-1"
    assert sleep.delays == [0.2, 1.0]


@pytest.mark.parametrize(
    ("mock", "message"),
    [
        pytest.param(
            {"status": 500, "payload": {"error": "server_error", "error_description": "boom"}},
            "the token endpoint answered 500: server_error: boom",
            id="500-with-oauth-error-body",
        ),
        pytest.param(
            {"status": 502, "body": "<html>bad gateway</html>"},
            "the token endpoint answered 502",
            id="502-html",
        ),
        pytest.param(
            {"exception": aiohttp.ClientConnectionError()},
            "the token endpoint could not be reached (ClientConnectionError)",
            id="connection-refused",
        ),
        pytest.param({"exception": TimeoutError()}, "the token endpoint timed out", id="timeout"),
    ],
)
async def test_token_endpoint_that_stays_down_raises_token_unavailable(
    oauth: OAuthM2M, endpoint: aioresponses, mock: dict[str, Any], message: str
) -> None:
    endpoint.post(TOKEN_URL, repeat=True, **mock)

    with pytest.raises(TokenUnavailable) as caught:
        await oauth.authorization()

    assert caught.value.message == message
    assert caught.value.status == mock.get("status")
    assert len(calls(endpoint, "POST", TOKEN_URL)) == 3


@pytest.mark.parametrize(
    ("mock", "message"),
    [
        pytest.param(
            {
                "status": 401,
                "payload": {"error": "invalid_client", "error_description": "Client auth failed"},
            },
            "the token endpoint answered 401: invalid_client: Client auth failed",
            id="401-invalid-client",
        ),
        pytest.param(
            {"status": 400, "payload": {"errorCode": "invalid_scope", "errorSummary": "nope"}},
            "the token endpoint answered 400: invalid_scope: nope",
            id="400-errorcode-shape",
        ),
        pytest.param(
            {"status": 302, "headers": {"Location": "https://elsewhere.example/login"}},
            "the token endpoint answered 302",
            id="302-redirect-not-followed",
        ),
        pytest.param(
            {"status": 200, "body": "not json"},
            "the token endpoint answered with a body that is not JSON",
            id="200-not-json",
        ),
        pytest.param(
            {"status": 200, "payload": {"token_type": "Bearer", "expires_in": 3600}},
            "the token endpoint answered without an access_token",
            id="200-without-token",
        ),
    ],
)
async def test_token_endpoint_refusal_is_not_retried(
    oauth: OAuthM2M, endpoint: aioresponses, mock: dict[str, Any], message: str
) -> None:
    endpoint.post(TOKEN_URL, repeat=True, **mock)

    with pytest.raises(TokenUnavailable) as caught:
        await oauth.authorization()

    assert caught.value.message == message
    assert len(calls(endpoint, "POST", TOKEN_URL)) == 1


async def test_concurrent_callers_share_one_failure(
    oauth: OAuthM2M, endpoint: aioresponses
) -> None:
    release = asyncio.Event()

    async def refuse_when_released(url: URL, **kwargs: Any) -> CallbackResult:
        await release.wait()
        return CallbackResult(status=401, payload={"error": "invalid_client"})

    endpoint.post(TOKEN_URL, callback=refuse_when_released, repeat=True)
    callers = [asyncio.create_task(oauth.authorization()) for _ in range(5)]
    await asyncio.sleep(0.001)

    release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)

    assert all(isinstance(result, TokenUnavailable) for result in results)
    assert len(calls(endpoint, "POST", TOKEN_URL)) == 1


async def test_stale_token_is_kept_while_the_token_endpoint_is_down(
    oauth: OAuthM2M, endpoint: aioresponses, clock: FakeClock
) -> None:
    endpoint.post(TOKEN_URL, payload=token_body("tok-1"))
    endpoint.post(TOKEN_URL, status=503, repeat=True)
    await oauth.authorization()
    clock.now += HOUR - 200

    first = await oauth.authorization()
    second = await oauth.authorization()

    assert (first, second) == ("Bearer tok-1", "Bearer tok-1")
    assert len(calls(endpoint, "POST", TOKEN_URL)) == 1 + 3  # no new attempts in the cooldown


async def test_expired_token_is_not_kept_when_the_token_endpoint_is_down(
    oauth: OAuthM2M, endpoint: aioresponses, clock: FakeClock
) -> None:
    endpoint.post(TOKEN_URL, payload=token_body("tok-1"))
    endpoint.post(TOKEN_URL, status=503, repeat=True)
    await oauth.authorization()
    clock.now += HOUR - 30

    with pytest.raises(TokenUnavailable):
        await oauth.authorization()


async def test_a_waiter_takes_over_when_the_fetching_caller_is_cancelled(
    oauth: OAuthM2M, endpoint: aioresponses
) -> None:
    release = asyncio.Event()
    answered = 0

    async def slow_then_fast(url: URL, **kwargs: Any) -> CallbackResult:
        nonlocal answered
        answered += 1
        if answered == 1:
            await release.wait()
        return CallbackResult(payload=token_body(f"tok-{answered}"))

    endpoint.post(TOKEN_URL, callback=slow_then_fast, repeat=True)
    leader = asyncio.create_task(oauth.authorization())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(oauth.authorization())
    await asyncio.sleep(0.001)

    leader.cancel()
    header = await asyncio.wait_for(waiter, timeout=1)

    release.set()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert header == "Bearer tok-2"


async def test_secrets_never_reach_messages_logs_or_reprs(
    oauth: OAuthM2M, endpoint: aioresponses, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint.post(TOKEN_URL, payload=token_body("tok-very-secret-access"))
    endpoint.post(
        TOKEN_URL,
        status=500,
        payload={"error": "server_error", "error_description": f"bad secret {CLIENT_SECRET}"},
        repeat=True,
    )
    await oauth.authorization()
    clock.now += HOUR

    with pytest.raises(TokenUnavailable) as caught:
        await oauth.authorization()

    seen = " ".join([str(caught.value), caplog.text, repr(oauth)])
    assert "server_error" in seen
    assert CLIENT_SECRET not in seen
    assert "tok-very-secret-access" not in seen
    assert base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode() not in seen


def test_static_token_repr_hides_the_token() -> None:
    assert TEST_TOKEN not in repr(StaticToken(SecretStr(TEST_TOKEN)))


async def test_settings_with_a_token_use_the_personal_access_token(
    settings: Settings, session: aiohttp.ClientSession
) -> None:
    provider = token_provider_for(settings, session)

    assert isinstance(provider, StaticToken)
    assert await provider.authorization() == f"Bearer {TEST_TOKEN}"


async def test_settings_with_client_credentials_use_oauth(
    session: aiohttp.ClientSession, endpoint: aioresponses
) -> None:
    env = {k: v for k, v in TEST_ENV.items() if k != "DATABRICKS_TOKEN"}
    env |= {"DATABRICKS_CLIENT_ID": CLIENT_ID, "DATABRICKS_CLIENT_SECRET": CLIENT_SECRET}
    endpoint.post(TOKEN_URL, payload=token_body("tok-sp"))

    provider = token_provider_for(load_settings(env, env_file=None), session)

    assert isinstance(provider, OAuthM2M)
    assert await provider.authorization() == "Bearer tok-sp"
