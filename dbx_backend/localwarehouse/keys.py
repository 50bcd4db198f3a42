"""Typed application keys of the local warehouse app, and the record of requests seen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dbx_backend.localwarehouse.config import WarehouseConfig
from dbx_backend.localwarehouse.engine import Engine
from dbx_backend.localwarehouse.faults import FaultInjector
from dbx_backend.localwarehouse.links import LinkSigner
from dbx_backend.localwarehouse.oauth import TokenStore
from dbx_backend.localwarehouse.power import Power


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request as the warehouse received it (no header values: they may be secrets)."""

    method: str
    path: str  # with the query string
    endpoint: str | None
    authorized: bool  # it carried an Authorization header
    json: Any = None


CONFIG = web.AppKey("config", WarehouseConfig)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
ENGINE = web.AppKey("engine", Engine)
POWER = web.AppKey("power", Power)
FAULTS = web.AppKey("faults", FaultInjector)
TOKENS = web.AppKey("tokens", TokenStore)
SIGNER = web.AppKey("signer", LinkSigner)
SEEN = web.AppKey("seen", list[SeenRequest])
