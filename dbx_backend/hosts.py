"""Which `Host` a server bound to this machine answers: the guard against DNS rebinding.

A web page on another site can make the browser send requests to a loopback port by pointing
its own host name at 127.0.0.1; those requests carry that site's name in `Host`. A server
bound to loopback therefore answers only loopback names and addresses (plus names the operator
allows). Shared by the service and the local warehouse: a pure function of strings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

ANY_HOST = "*"


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1), with or without []."""
    host = host.strip().lower().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The name part of a `Host` header, lower-cased, without port or brackets; None if bad."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:4000
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not _is_port(rest)):
            return None
        return name or None
    name, colon, port = header.partition(":")
    if colon and not _is_port(colon + port):
        return None
    return name or None


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit() and len(text) <= 6


class HostAllowlist:
    """Loopback names and addresses, plus `extra` names (`.example.com` covers subdomains)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        names = {name.strip().lower() for name in extra if name.strip()}
        self.any = ANY_HOST in names
        self._exact = frozenset(n for n in names if not n.startswith("."))
        self._suffixes = tuple(n for n in names if n.startswith("."))

    def allows(self, header: str | None) -> bool:
        """True when a request with this `Host` header (None: no header) may be answered."""
        if self.any:
            return True
        name = host_name(header) if header else None
        if name is None:
            return False
        return is_loopback(name) or name in self._exact or name.endswith(self._suffixes)


def allowlist_for(bind_host: str, allowed_hosts: Iterable[str]) -> HostAllowlist | None:
    """The allowlist a server bound to `bind_host` enforces, or None when any `Host` is fine.

    Bound to loopback: loopback names plus `allowed_hosts`. Bound elsewhere: only when
    `allowed_hosts` is set (then those plus loopback names).
    """
    allowed = tuple(allowed_hosts)
    if is_loopback(bind_host) or allowed:
        return HostAllowlist(allowed)
    return None
