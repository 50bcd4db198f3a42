"""What a request must pass before any handler runs: the API key and the `Host` header."""

from __future__ import annotations

import hashlib
import hmac
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from dbx_backend.config import Settings
from dbx_backend.hosts import HostAllowlist, allowlist_for

log = logging.getLogger("dbx_backend.api")


class Unauthorized(Exception):
    """No valid API key was presented."""


class HostNotAllowed(Exception):
    """The request's `Host` is not a name this service answers (DNS rebinding guard)."""


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


def caller_identity(settings: Settings, authorization: str) -> str:
    """Who is asking: a digest of the API key when keys are required, else everyone is one."""
    if not (settings.api_keys or settings.api_keys_file):
        return ""
    _, _, presented = authorization.partition(" ")
    return hashlib.sha256(presented.strip().encode()).hexdigest()
