"""Presigned-style download links for EXTERNAL_LINKS chunks (reference §9).

A link names a statement and chunk, carries its expiry, and is signed with a key known only
to this warehouse, like a cloud storage presigned URL: no bearer token is needed or accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

DOWNLOAD_PREFIX = "/_results"


class LinkSigner:
    """Mints and checks signed, expiring download links."""

    def __init__(self, expiry_s: float, clock: Callable[[], float]) -> None:
        self._key = secrets.token_bytes(32)
        self._expiry_s = expiry_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"LinkSigner(expiry_s={self._expiry_s})"

    def sign(self, base_url: str, statement_id: str, chunk_index: int) -> tuple[str, str]:
        """A fresh link for one chunk, and its expiration as ISO 8601 (UTC, milliseconds)."""
        expires = int(self._clock() + self._expiry_s)
        query = urlencode(
            {"X-Expires": expires, "X-Signature": self._mac(statement_id, chunk_index, expires)}
        )
        url = f"{base_url}{DOWNLOAD_PREFIX}/{statement_id}/{chunk_index}?{query}"
        expiration = datetime.fromtimestamp(expires, UTC).isoformat(timespec="milliseconds")
        return url, expiration.replace("+00:00", "Z")

    def check(self, statement_id: str, chunk_index: int, expires: str, signature: str) -> str:
        """ "ok", "forged" (bad or missing signature) or "expired"."""
        if not expires.isdigit() or not hmac.compare_digest(
            signature.encode(), self._mac(statement_id, chunk_index, int(expires)).encode()
        ):
            return "forged"
        return "expired" if self._clock() >= int(expires) else "ok"

    def _mac(self, statement_id: str, chunk_index: int, expires: int) -> str:
        message = f"{statement_id}/{chunk_index}/{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
