"""Statement handles: the opaque, signed, expiring ids the browser gets for async statements.

A handle carries the warehouse statement id, when it was submitted, an expiry and the caller's
rendering choices,
signed with HMAC-SHA256 under `STATEMENT_HANDLE_SECRET`, so the service keeps no per-statement
state: any replica with the same secret can serve any handle. A handle is also bound to the
caller (the API key presented, when keys are configured) without carrying it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from dbx_backend.config import ConfigError, Settings

log = logging.getLogger("dbx_backend.api")

_VERSION = 2
_HEADER = struct.Struct(">BQBQ")  # version, expiry (unix seconds), flags, submitted (unix ms)
# Version 1 had no submit time: still opened (issued by a replica not yet upgraded), its
# submit time then read back from the expiry and the TTL, to the second.
_HEADER_V1 = struct.Struct(">BQB")
_MAC_BYTES = 32
_CONTEXT = b"dbx-backend statement handle\x00"
_FLAG_LONG_AS_STRING = 0x01
_MIN_SECRET_BYTES = 16
_MAX_HANDLE_CHARS = 512
_HANDLE_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")
# One answer for every bad handle, so a caller cannot tell forged from expired or foreign.
UNKNOWN_HANDLE = "no such statement: the handle is unknown or has expired"

_warned_random_secret = False


class UnknownHandle(Exception):
    """A handle that is malformed, forged, expired, another caller's, or names a statement
    the warehouse no longer knows: all answer alike."""

    field = "statement_id"

    def __init__(self, message: str = UNKNOWN_HANDLE) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class HandleClaims:
    """What a valid handle says."""

    statement_id: str
    expires_at: float
    long_as_string: bool = False
    submitted_at: float = 0.0  # unix seconds


class HandleSigner:
    """Issues and opens handles; `clock` is wall time (replicas share it, not monotonic time)."""

    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < _MIN_SECRET_BYTES:
            raise ValueError("a handle secret needs at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self.clock = clock

    def __repr__(self) -> str:
        return f"HandleSigner(ttl_s={self.ttl_s})"

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Callable[[], float] = time.time
    ) -> HandleSigner:
        """The configured secret, or a random one for this process (warned about once)."""
        global _warned_random_secret
        if settings.statement_handle_secret is not None:
            secret = settings.statement_handle_secret.get_secret_value().encode()
            if len(secret) < _MIN_SECRET_BYTES:
                raise ConfigError(
                    f"STATEMENT_HANDLE_SECRET: must be at least {_MIN_SECRET_BYTES} bytes"
                )
        else:
            secret = secrets.token_bytes(32)
            if not _warned_random_secret:
                _warned_random_secret = True
                log.warning(
                    "STATEMENT_HANDLE_SECRET is not set: statement handles use a random "
                    "per-process secret, so another replica (or a restart) answers 404 for them; "
                    "set it to the same value on every replica"
                )
        return cls(secret, settings.statement_handle_ttl_s, clock)

    def issue(self, statement_id: str, *, caller: str = "", long_as_string: bool = False) -> str:
        """A URL-safe handle for `statement_id`, valid for `ttl_s` and only for `caller`."""
        now = self.clock()
        expires_at = int(now + self.ttl_s)
        flags = _FLAG_LONG_AS_STRING if long_as_string else 0
        header = _HEADER.pack(_VERSION, expires_at, flags, int(now * 1000))
        payload = header + statement_id.encode()
        token = payload + self._mac(payload, caller)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")

    def open(self, handle: str, *, caller: str = "") -> HandleClaims:
        """The claims of a valid handle; UnknownHandle for anything else, all alike."""
        claims = self._verify(handle, caller)
        if claims is None:
            raise UnknownHandle
        return claims

    def _verify(self, handle: str, caller: str) -> HandleClaims | None:
        if len(handle) > _MAX_HANDLE_CHARS or not _HANDLE_CHARS.match(handle):
            return None
        try:
            token = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(token) <= _HEADER_V1.size + _MAC_BYTES:
            return None
        payload, mac = token[:-_MAC_BYTES], token[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload, caller)):
            return None
        version, expires_at, flags = _HEADER_V1.unpack_from(payload)
        if version == _VERSION and len(payload) > _HEADER.size:
            submitted_at, header_size = _HEADER.unpack_from(payload)[3] / 1000, _HEADER.size
        elif version == 1:
            submitted_at, header_size = expires_at - self.ttl_s, _HEADER_V1.size
        else:
            return None
        if expires_at <= self.clock():
            return None
        try:
            statement_id = payload[header_size:].decode("utf-8")
        except UnicodeDecodeError:
            return None
        long_as_string = bool(flags & _FLAG_LONG_AS_STRING)
        return HandleClaims(statement_id, float(expires_at), long_as_string, submitted_at)

    def _mac(self, payload: bytes, caller: str) -> bytes:
        caller_digest = hashlib.sha256(caller.encode()).digest()
        return hmac.new(self._secret, _CONTEXT + caller_digest + payload, hashlib.sha256).digest()
