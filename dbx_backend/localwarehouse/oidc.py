"""OAuth M2M endpoints of a workspace: discovery and the client-credentials token grant (§10.2).

Clients authenticate with HTTP Basic (as the SDKs do) or, equally accepted, with
`client_id`/`client_secret` form fields; errors use the OAuth `error`/`error_description` body.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from dbx_backend.localwarehouse.keys import TOKENS
from dbx_backend.localwarehouse.routes import json_response


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return json_response({"error": error, "error_description": description}, status=status)


async def discovery(request: web.Request) -> web.Response:
    """GET /oidc/.well-known/oauth-authorization-server."""
    base = f"{request.scheme}://{request.host}/oidc"
    return json_response(
        {
            "issuer": base,
            "authorization_endpoint": f"{base}/v1/authorize",
            "token_endpoint": f"{base}/v1/token",
            "jwks_uri": f"{base}/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["code"],
            "scopes_supported": ["all-apis", "sql", "sql.statement-execution"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }
    )


async def token(request: web.Request) -> web.Response:
    """POST /oidc/v1/token with `grant_type=client_credentials`: a bearer access token."""
    form = await request.post()
    client_id, client_secret = _basic_credentials(request.headers.get("Authorization", ""))
    if client_id is None:
        client_id = str(form.get("client_id", "")) or None
        client_secret = str(form.get("client_secret", "")) or None
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(
            400, "unsupported_grant_type", "Only grant_type=client_credentials is supported."
        )
    tokens = request.app[TOKENS]
    if (
        client_id is None
        or client_secret is None
        or not tokens.authenticate_client(client_id, client_secret)
    ):
        return _oauth_error(401, "invalid_client", "Client authentication failed.")
    scope = str(form.get("scope") or "all-apis")
    return json_response(
        {
            "access_token": tokens.issue(),
            "token_type": "Bearer",
            "expires_in": int(tokens.ttl_s),
            "scope": scope,
        }
    )


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, client_secret = decoded.partition(":")
    return (client_id, client_secret) if sep else (None, None)


def add_routes(app: web.Application) -> None:
    """Register the discovery document and the token endpoint."""
    app.router.add_get("/oidc/.well-known/oauth-authorization-server", discovery, name="discovery")
    app.router.add_post("/oidc/v1/token", token, name="token")
