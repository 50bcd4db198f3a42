"""Cached results, and the bounded in-process store that keeps them.

An entry is the encoded JSON answer (served as is, never re-encoded per hit), its strong
ETag, and when it was stored with its policy. Ages use the wall clock, so replicas sharing a
Redis agree on them. The store also keeps the other formats' bodies of an entry once a hit
asked for them (`derived`), beside it and under the same byte bounds, so no hit encodes twice.

* fresh     age < ttl_s: answered as a hit
* stale     ttl_s <= age < ttl_s + stale_s: answered at once, refreshed in the background
* usable    age < stale_if_error_s: answered when the warehouse fails or is starting
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from dbx_backend.engine.memory import MemoryBudget

# What an entry costs beyond its body (the object, the key, the ETag), for the byte budget.
ENTRY_OVERHEAD_BYTES = 256


def strong_etag(body: bytes) -> str:
    """A strong ETag of a body: a quoted, shortened SHA-256."""
    return etag_of_digest(hashlib.sha256(body).digest())


def etag_of_digest(digest: bytes) -> str:
    """The strong ETag of a body whose SHA-256 `digest` was taken piece by piece."""
    return '"' + base64.urlsafe_b64encode(digest[:18]).decode() + '"'


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached result: the encoded JSON answer and its policy."""

    body: bytes
    etag: str
    stored_at: float
    ttl_s: float
    stale_s: float
    row_count: int
    statement_id: str
    truncated: bool = False  # a cap cut the rows: a stream may not answer with it

    @classmethod
    def create(
        cls,
        body: bytes,
        *,
        stored_at: float,
        ttl_s: float,
        stale_s: float,
        row_count: int,
        statement_id: str,
    ) -> CacheEntry:
        """An entry for `body`, with its ETag computed once."""
        return cls(body, strong_etag(body), stored_at, ttl_s, stale_s, row_count, statement_id)

    @property
    def size(self) -> int:
        """Bytes it holds, as the store's budget counts them."""
        return len(self.body) + ENTRY_OVERHEAD_BYTES

    def age(self, now: float) -> float:
        """Seconds since it was stored (never negative, whatever the clocks say)."""
        return max(0.0, now - self.stored_at)

    def remaining_s(self, now: float) -> float:
        """Seconds it stays fresh."""
        return max(0.0, self.ttl_s - self.age(now))

    def is_fresh(self, now: float) -> bool:
        """Within its TTL."""
        return self.age(now) < self.ttl_s

    def in_stale_window(self, now: float) -> bool:
        """Expired, but within stale-while-revalidate."""
        return self.ttl_s <= self.age(now) < self.ttl_s + self.stale_s

    def to_bytes(self) -> bytes:
        """A self-describing form for a shared store: a JSON header line, then the body."""
        header = {
            "etag": self.etag,
            "stored_at": self.stored_at,
            "ttl_s": self.ttl_s,
            "stale_s": self.stale_s,
            "row_count": self.row_count,
            "statement_id": self.statement_id,
            "truncated": self.truncated,
        }
        return orjson.dumps(header) + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> CacheEntry:
        """The entry `to_bytes` wrote; ValueError when it is not one."""
        header_line, newline, body = data.partition(b"\n")
        if not newline:
            raise ValueError("not a cache entry")
        try:
            h = orjson.loads(header_line)
            return cls(
                body,
                str(h["etag"]),
                float(h["stored_at"]),
                float(h["ttl_s"]),
                float(h["stale_s"]),
                int(h["row_count"]),
                str(h["statement_id"]),
                bool(h.get("truncated", False)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError("not a cache entry") from exc


@dataclass(slots=True)
class StoreStats:
    """What the store did, for the metrics."""

    evictions: int = 0
    bytes_held: int = 0
    entries: int = 0


class MemoryStore:
    """Entries in this process, bounded in bytes, least recently used evicted first.

    An entry larger than `max_entry_bytes` is refused (so it costs nothing); an entry older
    than the `keep_s` it was stored with is dropped when met. With a memory budget, entries
    also hold their bytes in it, and give way first: the budget asks the store to `reclaim`
    when an answer needs room, and the store keeps nothing while answers wait for some.
    """

    def __init__(
        self,
        max_bytes: int,
        max_entry_bytes: int,
        *,
        budget: MemoryBudget | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.budget = budget
        self.clock = clock
        self.stats = StoreStats()
        self._entries: OrderedDict[str, tuple[CacheEntry, float]] = OrderedDict()
        self._derived: dict[str, dict[str, bytes]] = {}  # by key, then form
        if budget is not None:
            budget.give_way_with(self)

    def get(self, key: str) -> CacheEntry | None:
        """The entry under `key`, marked as recently used; None when absent or past keeping."""
        found = self._entries.get(key)
        if found is None:
            return None
        entry, keep_until = found
        if self.clock() >= keep_until:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CacheEntry, keep_s: float) -> bool:
        """Store `entry` for `keep_s` seconds; False when it is over the entry cap."""
        if len(entry.body) > self.max_entry_bytes or entry.size > self.max_bytes or keep_s <= 0:
            return False
        self._drop(key)
        if self.budget is not None:
            if entry.size > self.budget.free + self.stats.bytes_held:
                return False  # evicting every entry would not make room
            while not self.budget.hold_for_cache(entry.size):
                if not self._entries or self.budget.waiting:
                    return False  # the memory belongs to answers now
                self._evict_oldest()
        self._entries[key] = (entry, self.clock() + keep_s)
        self.stats.bytes_held += entry.size
        self.stats.entries += 1
        while self.stats.bytes_held > self.max_bytes and self._entries:
            self._evict_oldest()
        return True

    def get_derived(self, key: str, etag: str, form: str) -> bytes | None:
        """Another format's body of the entry under `key`, if one was kept for this ETag."""
        found = self._entries.get(key)
        if found is None or found[0].etag != etag:
            return None
        return self._derived.get(key, {}).get(form)

    def put_derived(self, key: str, etag: str, form: str, body: bytes) -> bool:
        """Keep `body` beside the entry under `key` (while it holds this ETag), counted with
        it; False when it does not fit (then it is made again when asked)."""
        found = self._entries.get(key)
        if found is None or found[0].etag != etag or len(body) > self.max_entry_bytes:
            return False
        kept = self._derived.setdefault(key, {})
        if form in kept:
            return True
        size = len(body)
        if self.stats.bytes_held + size > self.max_bytes:
            return False  # evicting others for a copy of what is already kept is not worth it
        if self.budget is not None and not self.budget.hold_for_cache(size):
            return False
        kept[form] = body
        self.stats.bytes_held += size
        return True

    def reclaim(self, nbytes: int) -> int:
        """Evict least recently used entries until `nbytes` are freed (or none is left)."""
        freed = 0
        while freed < nbytes and self._entries:
            freed += self._evict_oldest()
        return freed

    def delete(self, key: str) -> None:
        """Forget `key`."""
        self._drop(key)

    def __len__(self) -> int:
        return len(self._entries)

    def _evict_oldest(self) -> int:
        oldest = next(iter(self._entries))
        self.stats.evictions += 1
        return self._drop(oldest)

    def _drop(self, key: str) -> int:
        found = self._entries.pop(key, None)
        if found is None:
            return 0
        size = found[0].size + sum(map(len, self._derived.pop(key, {}).values()))
        self.stats.bytes_held -= size
        self.stats.entries -= 1
        if self.budget is not None:
            self.budget.release_from_cache(size)
        return size
