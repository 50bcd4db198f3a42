"""The gate: every statement the service sends to the warehouse passes `Gate.check` first.

It applies, in this order: `ALLOW_ADHOC_SQL` (ad-hoc SQL only when on), `MAX_SQL_BYTES`, and
with `READ_ONLY` the read-only policy (`sqlpolicy.py`). What passes becomes an `Admitted`
statement sealed here; the engine submits nothing else, and admits a bare string
itself (as ad-hoc SQL) on its way in, so no route reaches the warehouse around the gate.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from dbx_backend.config import Settings
from dbx_backend.queries import NamedQuery
from dbx_backend.sqlpolicy import check_read_only

# Parsing a statement this long takes long enough to stall other requests: off the loop.
THREAD_CHECK_BYTES = 8 * 1024
PROBE_SQL = "SELECT 1"  # the one statement the service writes itself

Source = Literal["adhoc", "named", "probe"]


class AdhocSqlDisabled(Exception):
    """Ad-hoc SQL is turned off (`ALLOW_ADHOC_SQL=false`): only named queries may run."""


class SqlTooLarge(Exception):
    """The SQL text is over `MAX_SQL_BYTES`."""


class NotAdmitted(Exception):
    """A statement reached the engine without passing its gate: a programming error."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """SQL the gate let through, and why it may run (ad-hoc, a named query, the probe)."""

    sql: str
    source: Source
    seal: bytes = field(repr=False, compare=False)


# Seals what the gate let through: a route that builds an `Admitted` itself, or changes the SQL
# of one it was given, holds no valid seal, and the engine sends nothing for it.
_SEAL_KEY = secrets.token_bytes(32)


def _seal(sql: str, source: Source) -> bytes:
    return hmac.new(_SEAL_KEY, f"{source}\0{sql}".encode(), hashlib.sha256).digest()


# The readiness probe: checked when it is sent, like every statement, and allowed to run when
# ad-hoc SQL is off.
PROBE = Admitted(PROBE_SQL, "probe", _seal(PROBE_SQL, "probe"))


# Front ends send the same statements again and again: remember the ones that passed (a
# refusal raises, and exceptions are not cached).
_check_read_only_cached = functools.lru_cache(maxsize=2048)(check_read_only)


class Gate:
    """Admits statements under one service's policy."""

    def __init__(
        self,
        *,
        read_only: bool = True,
        allow_adhoc_sql: bool = True,
        max_sql_bytes: int = 65536,
        queries: Mapping[str, NamedQuery] | None = None,
    ) -> None:
        self.read_only = read_only
        self.allow_adhoc_sql = allow_adhoc_sql
        self.max_sql_bytes = max_sql_bytes
        self.queries: Mapping[str, NamedQuery] = queries or {}

    @classmethod
    def from_settings(
        cls, settings: Settings, queries: Mapping[str, NamedQuery] | None = None
    ) -> Gate:
        """The gate of a service configured by `settings`, knowing its named queries."""
        return cls(
            read_only=settings.read_only,
            allow_adhoc_sql=settings.allow_adhoc_sql,
            max_sql_bytes=settings.max_sql_bytes,
            queries=queries,
        )

    async def admit(self, sql: str) -> Admitted:
        """Ad-hoc SQL from a caller."""
        await self.check(sql, adhoc=True)
        return Admitted(sql, "adhoc", _seal(sql, "adhoc"))

    async def admit_named(self, named: NamedQuery) -> Admitted:
        """A named query loaded at start (the same object, not one built from a request)."""
        if self.queries.get(named.name) is not named:
            raise NotAdmitted(f"{named.name!r} is not a named query of this service")
        await self.check(named.sql, adhoc=False)
        return Admitted(named.sql, "named", _seal(named.sql, "named"))

    async def admitted(self, statement: str | Admitted) -> Admitted:
        """`statement` as the gate admitted it: a string is checked as ad-hoc SQL now."""
        if isinstance(statement, str):
            return await self.admit(statement)
        # In-process code holding the object: no timing to hide, a plain comparison will do.
        if statement.seal != _seal(statement.sql, statement.source):
            raise NotAdmitted("a statement reached the engine without passing its gate")
        if statement.source == "probe":
            await self.check(statement.sql, adhoc=False)
        return statement

    async def check(self, sql: str, *, adhoc: bool) -> None:
        """Refuse SQL the service may not run: ad-hoc when disabled, too large, or not a read."""
        if adhoc and not self.allow_adhoc_sql:
            raise AdhocSqlDisabled("ad-hoc SQL is disabled on this service; use a named query")
        size = len(sql.encode())
        if size > self.max_sql_bytes:
            raise SqlTooLarge(f"the SQL is {size} bytes; the limit is {self.max_sql_bytes}")
        if self.read_only:
            if size > THREAD_CHECK_BYTES:
                await asyncio.to_thread(check_read_only, sql)
            else:
                _check_read_only_cached(sql)
