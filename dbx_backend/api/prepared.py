"""Requests seen before, ready to run: a dashboard's next viewer sends the very bytes the last
one sent, and goes straight to the result cache.

A request is remembered only once its body passed validation and its statement passed the
gate, under the digest of its exact body bytes (with the route, and the caller when the cache
is per caller). Validating those bytes again, admitting that SQL again and deriving its cache
key again would give the same answer: settings and named queries are fixed for the life of
the process. So a repeat skips the request model, the read-only SQL parse and the key's
canonical SQL, and never reaches a hit for SQL the gate refuses (a refusal is never
remembered). Bounded: the most recently used `max_entries`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from dbx_backend.api.models import RunOptions
from dbx_backend.engine import Admitted, CachePolicy, ParamScalar, TypedParam

PREPARED_MAX_ENTRIES = 4096
# Bodies up to this size are kept as the memo's key (at most 4096 x 4 KiB); larger ones as a
# 20-byte digest (a 2^-160 chance of two bodies sharing one).
KEEP_BODY_BYTES = 4096

Params = Mapping[str, ParamScalar | TypedParam]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated request whose statement the gate admitted, with its cache key."""

    statement: Admitted
    params: Params
    options: RunOptions  # row_limit, timeout_s, long_as_string, disposition as sent
    catalog: str | None  # the request's own, or the service's default
    schema: str | None
    policy: CachePolicy  # the named query's own, or the service's
    cacheable: bool  # deterministic and a read: its result may be stored
    key: str  # the result cache's key
    timeout_s: float  # the request's deadline, capped by MAX_QUERY_TIMEOUT_S
    caller: str  # whose cache it reads: the caller's digest with CACHE_SCOPE=per_key, else ""


class PreparedRequests:
    """An LRU of prepared requests by (route, caller, body digest)."""

    def __init__(self, max_entries: int = PREPARED_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, bytes], Prepared] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, route: str, caller: str, body: bytes) -> Prepared | None:
        """The request prepared from these exact bytes before, if remembered."""
        # Small bodies (all a dashboard sends) are their own key: hashing them costs nothing
        # more; larger ones are kept as a digest, so the memo's memory stays bounded.
        name = (route, caller, body if len(body) <= KEEP_BODY_BYTES else _digest(body))
        prepared = self._entries.get(name)
        if prepared is not None:
            self._entries.move_to_end(name)
        return prepared

    def put(self, route: str, caller: str, body: bytes, prepared: Prepared) -> None:
        """Remember `prepared` for these bytes (only once it was validated and admitted)."""
        name = (route, caller, body if len(body) <= KEEP_BODY_BYTES else _digest(body))
        self._entries[name] = prepared
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=20).digest()


# The API layer's own: the request parsing it saves is the API's.
PREPARED: web.AppKey[PreparedRequests] = web.AppKey("prepared_requests")
