"""Databricks credentials: the `Authorization` header value for every warehouse request.

A personal access token is used as is. OAuth machine-to-machine (a service principal's client
id and secret) fetches short-lived access tokens from the workspace token endpoint, caches
them, and fetches a new one shortly before expiry or after a 401, one fetch at a time.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
import orjson
from pydantic import SecretStr
from yarl import URL

from dbx_backend.config import Settings
from dbx_backend.warehouse.errors import TokenUnavailable

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# A token counts as stale this long before it expires (or at half its lifetime, if that is
# sooner). For Databricks' one-hour tokens that is 5 minutes, well above the 40 s the Python
# SDK keeps because Azure refuses tokens with 30 s or less left (reference §10.2).
REFRESH_MARGIN_S = 300.0
# A stale token is still sent while the token endpoint is failing, down to this much life.
MIN_USABLE_S = 40.0
# Databricks documents one-hour access tokens; used when a response omits `expires_in`.
DEFAULT_LIFETIME_S = 3600.0
# After a failed refresh with a still-usable token, wait this long before trying again.
RETRY_COOLDOWN_S = 10.0
RETRY_DELAYS_S = (0.2, 1.0)
_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class TokenProvider(Protocol):
    """Supplies the `Authorization` header value for warehouse requests."""

    refreshes: int

    async def authorization(self) -> str:
        """The full header value to send now, such as `Bearer <token>`."""
        ...

    async def refresh(self, rejected: str) -> str:
        """A header value to retry with after the warehouse answered 401 to `rejected`."""
        ...


class StaticToken:
    """A personal access token: there is nothing to refresh, so a 401 is final."""

    def __init__(self, token: SecretStr) -> None:
        self._header = f"Bearer {token.get_secret_value()}"
        self.refreshes = 0

    def __repr__(self) -> str:
        return "StaticToken(token='**********')"

    async def authorization(self) -> str:
        """The `Bearer` header value for the token."""
        return self._header

    async def refresh(self, rejected: str) -> str:
        """The same value: a rejected personal access token cannot be renewed by us."""
        return self._header


@dataclass(frozen=True, slots=True)
class _Token:
    header: str = ""
    fetched_at: float = 0.0
    expires_at: float = 0.0

    def __repr__(self) -> str:
        return f"_Token(expires_at={self.expires_at})"

    def stale_at(self) -> float:
        lifetime = self.expires_at - self.fetched_at
        return self.expires_at - min(REFRESH_MARGIN_S, lifetime / 2)


class _FetchAbandoned(Exception):
    """The caller doing the shared fetch was cancelled; a waiter should take over."""


class _Transient(Exception):
    """A token endpoint failure worth another try; carries a safe message."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OAuthM2M:
    """OAuth client credentials for a service principal (reference §10.2)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        host: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        scope: str = "all-apis",
        clock: Callable[[], float] = time.monotonic,
        timeout: aiohttp.ClientTimeout | None = None,
        sleep: Sleep = asyncio.sleep,
        retry_delays_s: tuple[float, ...] | None = None,
    ) -> None:
        self.refreshes = 0
        self._session = session
        self._host = host.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._clock = clock
        self._timeout = timeout or aiohttp.ClientTimeout(total=30.0, sock_connect=10.0)
        self._sleep = sleep
        self._retry_delays_s = RETRY_DELAYS_S if retry_delays_s is None else retry_delays_s
        self._token: _Token | None = None
        self._token_endpoint: URL | None = None
        self._inflight: asyncio.Future[str] | None = None
        self._next_try_at = 0.0

    def __repr__(self) -> str:
        return (
            f"OAuthM2M(host={self._host!r}, client_id={self._client_id!r}, scope={self._scope!r})"
        )

    async def authorization(self) -> str:
        """A cached token while it is fresh; otherwise one shared fetch for all callers."""
        token = self._token
        if token is not None and self._usable(token, rejected=None):
            return token.header
        return await self._renew(rejected=None)

    async def refresh(self, rejected: str) -> str:
        """A newer token than `rejected` if one is already cached, else a freshly fetched one."""
        return await self._renew(rejected=rejected)

    def _usable(self, token: _Token, *, rejected: str | None) -> bool:
        now = self._clock()
        if rejected is not None:
            # After a 401: any other token that has not expired is newer than the rejected one.
            return token.header != rejected and now < token.expires_at - MIN_USABLE_S
        if now < token.stale_at():
            return True
        # Stale, but the last refresh failed moments ago: keep it rather than hammer the endpoint.
        return now < self._next_try_at and now < token.expires_at - MIN_USABLE_S

    async def _renew(self, *, rejected: str | None) -> str:
        # Single flight: the first caller fetches, the others await its future. If that caller
        # is cancelled mid-fetch, a waiter takes over; the loop bounds how often that can happen.
        for _ in range(8):
            token = self._token
            if token is not None and self._usable(token, rejected=rejected):
                return token.header
            if self._inflight is not None:
                try:
                    return await asyncio.shield(self._inflight)
                except _FetchAbandoned:
                    continue
                except TokenUnavailable as exc:
                    raise TokenUnavailable(exc.message, status=exc.status) from None
            return await self._lead_fetch(token, rejected)
        raise TokenUnavailable("the token fetch was interrupted repeatedly")

    async def _lead_fetch(self, token: _Token | None, rejected: str | None) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight = future
        try:
            header = await self._fetch_and_keep(token, rejected)
        except asyncio.CancelledError:
            future.set_exception(_FetchAbandoned())
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(header)
            return header
        finally:
            self._inflight = None
            if future.done() and not future.cancelled():
                future.exception()  # retrieved here, so an unawaited failure is not logged

    async def _fetch_and_keep(self, token: _Token | None, rejected: str | None) -> str:
        try:
            fresh = await self._fetch()
        except TokenUnavailable as exc:
            now = self._clock()
            if token is None or token.header == rejected or now >= token.expires_at - MIN_USABLE_S:
                raise
            self._next_try_at = now + RETRY_COOLDOWN_S
            log.warning("token refresh failed, keeping the current token: %s", exc.message)
            return token.header
        self._token = fresh
        self._next_try_at = 0.0
        self.refreshes += 1
        return fresh.header

    async def _fetch(self) -> _Token:
        # Transient failures (5xx, 429, no connection, timeout) get a few quick retries.
        for delay in self._retry_delays_s:
            try:
                return await self._fetch_once()
            except _Transient as exc:
                log.warning("token endpoint failed (%s), retrying", exc)
                await self._sleep(delay)
        try:
            return await self._fetch_once()
        except _Transient as exc:
            raise TokenUnavailable(str(exc), status=exc.status) from None

    async def _fetch_once(self) -> _Token:
        endpoint = await self._discover()
        credentials = f"{self._client_id}:{self._client_secret.get_secret_value()}"
        headers = {
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode("ascii"),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        form = urlencode({"grant_type": "client_credentials", "scope": self._scope})
        status, body = await self._call("POST", endpoint, headers=headers, data=form)
        if not 200 <= status < 300:
            raise self._failure(status, body)
        return self._parse_token(body)

    async def _discover(self) -> URL:
        """The token endpoint from the workspace's OAuth metadata (reference §10.2)."""
        if self._token_endpoint is not None:
            return self._token_endpoint
        url = URL(f"{self._host}/oidc/.well-known/oauth-authorization-server")
        status, body = await self._call("GET", url, headers={"Accept": "application/json"})
        if status == 404:
            endpoint = URL(f"{self._host}/oidc/v1/token")
        elif not 200 <= status < 300:
            raise self._failure(status, body, what="OAuth discovery")
        else:
            document = _json_object(body)
            raw = document.get("token_endpoint") if document is not None else None
            if not isinstance(raw, str):
                raise TokenUnavailable("OAuth discovery answered without a token_endpoint")
            endpoint = URL(raw)
            # The client secret goes to this URL: accept only the workspace itself.
            if endpoint.origin() != URL(self._host).origin():
                raise TokenUnavailable("OAuth discovery named a token endpoint on another host")
        self._token_endpoint = endpoint
        return endpoint

    async def _call(
        self, method: str, url: URL, *, headers: dict[str, str], data: str | None = None
    ) -> tuple[int, bytes]:
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                data=data,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                return response.status, await response.read()
        except TimeoutError:
            raise _Transient("the token endpoint timed out") from None
        except aiohttp.ClientError as exc:
            raise _Transient(
                f"the token endpoint could not be reached ({type(exc).__name__})"
            ) from None

    def _failure(self, status: int, body: bytes, *, what: str = "the token endpoint") -> Exception:
        message = f"{what} answered {status}"
        detail = _error_detail(body)
        if detail:
            message = f"{message}: {self._scrub(detail)}"
        if status in _TRANSIENT_STATUSES:
            return _Transient(message, status)
        return TokenUnavailable(message, status=status)

    def _parse_token(self, body: bytes) -> _Token:
        document = _json_object(body)
        if document is None:
            raise TokenUnavailable("the token endpoint answered with a body that is not JSON")
        access_token = document.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise TokenUnavailable("the token endpoint answered without an access_token")
        scheme = document.get("token_type")
        if not isinstance(scheme, str) or not scheme or scheme.lower() == "bearer":
            scheme = "Bearer"
        lifetime = _lifetime_s(document.get("expires_in"))
        now = self._clock()
        log.info("fetched an OAuth access token valid for %.0f s", lifetime)
        return _Token(f"{scheme} {access_token}", now, now + lifetime)

    def _scrub(self, text: str) -> str:
        secret = self._client_secret.get_secret_value()
        if secret:
            text = text.replace(secret, "**********")
        return text[:300]


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _error_detail(body: bytes) -> str | None:
    """`"<error>: <error_description>"` (or the errorCode/errorSummary shape), as the SDK shows."""
    document = _json_object(body)
    if document is None:
        return None
    code = document.get("error") or document.get("errorCode")
    summary = document.get("error_description") or document.get("errorSummary")
    parts = [str(part) for part in (code, summary) if isinstance(part, str) and part]
    return ": ".join(parts) or None


def _lifetime_s(raw: object) -> float:
    if isinstance(raw, bool) or raw is None:
        return DEFAULT_LIFETIME_S
    try:
        lifetime = float(raw) if isinstance(raw, int | float | str) else DEFAULT_LIFETIME_S
    except ValueError:
        return DEFAULT_LIFETIME_S
    return lifetime if math.isfinite(lifetime) and lifetime > 0 else DEFAULT_LIFETIME_S


def token_provider_for(settings: Settings, session: aiohttp.ClientSession) -> TokenProvider:
    """The personal access token if one is configured, else OAuth M2M for the client id/secret."""
    if settings.databricks_token is not None:
        return StaticToken(settings.databricks_token)
    if settings.databricks_client_id is None or settings.databricks_client_secret is None:
        raise ValueError("no Databricks credential configured")
    # A token answer is small and quick; three slow attempts must not hold a query for minutes.
    timeout = aiohttp.ClientTimeout(
        total=min(settings.http_request_timeout_s, 30.0),
        sock_connect=settings.http_connect_timeout_s,
    )
    return OAuthM2M(
        session,
        settings.databricks_host,
        settings.databricks_client_id,
        settings.databricks_client_secret,
        timeout=timeout,
    )
