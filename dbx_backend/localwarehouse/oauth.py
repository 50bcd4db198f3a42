"""Bearer tokens the warehouse accepts: the static token and OAuth M2M access tokens.

Access tokens come from the client-credentials grant of `/oidc/v1/token` (reference §10.2)
and are valid for `oauth_token_ttl_s`; both kinds are compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping


class TokenStore:
    """Which bearer tokens are valid now, and the OAuth clients allowed to get one."""

    def __init__(
        self,
        static_token: str,
        clients: Mapping[str, str],
        ttl_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._static = static_token
        self._clients = dict(clients)
        self.ttl_s = ttl_s
        self._clock = clock
        self._issued: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"TokenStore(clients={len(self._clients)}, issued={len(self._issued)})"

    def accepts(self, token: str) -> bool:
        """True for the static token or an issued, unexpired access token."""
        if self._static and hmac.compare_digest(token.encode(), self._static.encode()):
            return True
        expires_at = self._issued.get(token)
        if expires_at is None:
            return False
        if self._clock() >= expires_at:
            del self._issued[token]
            return False
        return True

    def authenticate_client(self, client_id: str, client_secret: str) -> bool:
        """True when the client exists and its secret matches."""
        expected = self._clients.get(client_id)
        return expected is not None and hmac.compare_digest(
            client_secret.encode(), expected.encode()
        )

    def issue(self) -> str:
        """A new access token valid for `ttl_s` from now."""
        now = self._clock()
        self._issued = {t: e for t, e in self._issued.items() if e > now}
        token = "dlo-" + secrets.token_urlsafe(32)
        self._issued[token] = now + self.ttl_s
        return token
