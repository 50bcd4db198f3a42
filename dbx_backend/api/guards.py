"""What a request must pass before the warehouse sees it: API keys, the SQL policy, limits."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from dbx_backend.config import Settings
from dbx_backend.hosts import HostAllowlist, allowlist_for
from dbx_backend.sqlpolicy import check_read_only

log = logging.getLogger("dbx_backend.api")
THREAD_CHECK_BYTES = 8 * 1024


class Unauthorized(Exception):
    """No valid API key was presented."""


class AdhocSqlDisabled(Exception):
    """Ad-hoc SQL is turned off (`ALLOW_ADHOC_SQL=false`): only named queries may run."""


class SqlTooLarge(Exception):
    """The SQL text is over `MAX_SQL_BYTES`."""


class HostNotAllowed(Exception):
    """The request's `Host` is not a name this service answers (DNS rebinding guard)."""


class TooManyQueries(Exception):
    """This process already runs `MAX_CONCURRENT_QUERIES` statements."""

    retry_after = 1.0


def load_api_keys(settings: Settings) -> tuple[bytes, ...]:
    """The configured keys (`API_KEYS` and `API_KEYS_FILE`, merged at load), as bytes."""
    return tuple(key.get_secret_value().encode() for key in settings.api_keys)


def api_key_middleware(keys: tuple[bytes, ...]) -> Middleware:
    """Require `Authorization: Bearer <key>` on `/api/*` when keys are configured."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if keys and request.path.startswith("/api/") and request.method != "OPTIONS":
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            candidate = presented.strip().encode()
            # Compare with every key, in constant time each, so timing tells nothing.
            matched = False
            for key in keys:
                matched |= hmac.compare_digest(candidate, key)
            if scheme.lower() != "bearer" or not matched:
                raise Unauthorized("a valid API key is required: Authorization: Bearer <key>")
        return await handler(request)

    return middleware


def host_middleware(settings: Settings) -> Middleware:
    """Answer only loopback `Host` names (and `ALLOWED_HOSTS`) when bound to loopback."""
    allowlist: HostAllowlist | None = allowlist_for(settings.host, settings.allowed_hosts)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if allowlist is not None and not allowlist.allows(request.headers.get("Host")):
            raise HostNotAllowed(
                "this service answers only requests addressed to localhost, 127.0.0.1 or [::1]"
                " (or a name in ALLOWED_HOSTS); add the host name to ALLOWED_HOSTS to serve it"
            )
        return await handler(request)

    return middleware


async def check_sql(settings: Settings, sql: str, *, adhoc: bool) -> None:
    """Refuse SQL the service may not run: ad-hoc when disabled, too large, or not a read."""
    if adhoc and not settings.allow_adhoc_sql:
        raise AdhocSqlDisabled("ad-hoc SQL is disabled on this service; use a named query")
    size = len(sql.encode())
    if size > settings.max_sql_bytes:
        raise SqlTooLarge(f"the SQL is {size} bytes; the limit is {settings.max_sql_bytes}")
    if settings.read_only:
        if size > THREAD_CHECK_BYTES:  # parsing a long statement takes long: off the loop
            await asyncio.to_thread(check_read_only, sql)
        else:
            _check_read_only_cached(sql)


# Front ends send the same statements again and again: remember the ones that passed (a
# refusal raises, and exceptions are not cached).
_check_read_only_cached = functools.lru_cache(maxsize=2048)(check_read_only)


class QueryLimiter:
    """At most `limit` statements in flight in this process; over it, refuse at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of a query, or raise TooManyQueries."""
        if self.in_flight >= self.limit:
            raise TooManyQueries(
                f"this service already runs {self.limit} queries; try again shortly"
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


def caller_identity(settings: Settings, authorization: str) -> str:
    """Who is asking: a digest of the API key when keys are required, else everyone is one."""
    if not (settings.api_keys or settings.api_keys_file):
        return ""
    _, _, presented = authorization.partition(" ")
    return hashlib.sha256(presented.strip().encode()).hexdigest()
