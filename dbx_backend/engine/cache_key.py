"""The result cache's key: everything that can change a statement's result, hashed.

The statement's canonical text, its parameters with their types, catalog, schema, `row_limit`,
`long_as_string`, the warehouse, and the caller when `CACHE_SCOPE=per_key` (with the default
`shared` scope every caller reads as the service's own Databricks identity, so results are the
same for all of them). The response format is not part of it: one entry answers in any format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from dbx_backend.engine.sqlfacts import sql_facts

KEY_VERSION = 1  # bump when the key's make-up changes, so old shared entries are not read


@dataclass(frozen=True, slots=True)
class CacheKeyParts:
    """The inputs of a key; `params` are (name, value as sent, SQL type) triples."""

    sql: str
    params: tuple[tuple[str, str | None, str | None], ...] = ()
    catalog: str | None = None
    schema: str | None = None
    row_limit: int | None = None
    long_as_string: bool = False
    warehouse_id: str = ""
    caller: str | None = None  # set only with CACHE_SCOPE=per_key


def params_for_key(
    params: Iterable[tuple[str, str | None, str | None]],
) -> tuple[tuple[str, str | None, str | None], ...]:
    """Parameters in name order: the order they were given in does not change the result."""
    return tuple(sorted(params, key=lambda p: p[0]))


def cache_key(parts: CacheKeyParts) -> str:
    """A hex digest naming the result; equal for requests that must give equal results."""
    material = orjson.dumps(
        [
            KEY_VERSION,
            sql_facts(parts.sql).canonical,
            [list(p) for p in params_for_key(parts.params)],
            parts.catalog,
            parts.schema,
            parts.row_limit,
            parts.long_as_string,
            parts.warehouse_id,
            parts.caller,
        ]
    )
    return hashlib.sha256(material).hexdigest()
