"""A request's `Cache-Control`, read as the result cache's instructions (RFC 9111 §5.2.1).

* `no-cache`        run fresh, store the result
* `no-store`        run fresh, store nothing
* `max-age=N`       an entry at most N seconds old will do
* `only-if-cached`  answer from the cache or not at all (`504 NOT_CACHED`)

Other directives are ignored, as a cache must; a malformed `max-age` is refused, so the
mistake is seen rather than silently read as "no limit".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIRECTIVE = re.compile(r'^\s*([A-Za-z-]+)\s*(?:=\s*"?([^",]*)"?\s*)?$')


class InvalidCacheControl(ValueError):
    """The `Cache-Control` header holds a directive whose value cannot be read."""


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """What the caller asks of the cache; the default asks for the cache's own policy."""

    no_cache: bool = False
    no_store: bool = False
    max_age_s: float | None = None
    only_if_cached: bool = False

    @property
    def may_read(self) -> bool:
        """True when an entry may answer (not `no-cache`, not `no-store`)."""
        return not (self.no_cache or self.no_store)


DEFAULT = CacheRequest()


def parse_cache_control(header: str | None) -> CacheRequest:
    """The cache instructions in a `Cache-Control` header (None or empty: the defaults)."""
    if not header or not header.strip():
        return DEFAULT
    no_cache = no_store = only_if_cached = False
    max_age: float | None = None
    for part in header.split(","):
        if not part.strip():
            continue
        match = _DIRECTIVE.match(part)
        if match is None:
            continue  # not a directive we could read: ignored, like any unknown one
        name, value = match[1].lower(), match[2]
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "only-if-cached":
            only_if_cached = True
        elif name == "max-age":
            if value is None or not value.strip().isdigit():
                raise InvalidCacheControl(
                    f"Cache-Control max-age must be a whole number of seconds, not {value!r}"
                )
            # Several max-age directives: the strictest wins.
            seconds = float(int(value.strip()))
            max_age = seconds if max_age is None else min(max_age, seconds)
    return CacheRequest(no_cache, no_store, max_age, only_if_cached)
