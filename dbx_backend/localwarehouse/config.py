"""Settings of the local warehouse: one frozen value passed to everything that needs it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class WarehouseConfig:
    """How the local warehouse listens, authenticates, chunks and keeps results.

    Defaults follow the real service (reference §12): 25 MiB INLINE cap, 1 h result retention,
    12 h purge, 15 min external links, 1 h OAuth tokens.
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port
    token: str = field(default="dapi-local", repr=False)
    warehouse_id: str = "local"
    chunk_rows: int = 10_000
    chunk_bytes: int = 4 * 1024 * 1024
    inline_limit_bytes: int = 25 * 1024 * 1024
    result_retention_s: float = 3600
    purge_after_s: float = 12 * 3600
    link_expiry_s: float = 900
    link_headers: Mapping[str, str] = field(default_factory=_empty, repr=False)
    close_after_last_chunk: bool = False  # the strict/preview reading, reference §4.2
    data_dir: Path | None = None
    admin_enabled: bool = False
    # Bound to loopback, only loopback `Host` names are answered, plus these (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()
    oauth_clients: Mapping[str, str] = field(default_factory=_empty, repr=False)
    oauth_token_ttl_s: float = 3600
    seed_samples: bool = True
    max_running: int = 8  # statements executing at once; later ones wait in PENDING
    pending_delay_s: float = 0.0  # time every statement spends in PENDING before it runs
    wait_timeout_scale: float = 1.0  # tests shrink `wait_timeout` waits (5 s -> 50 ms at 0.01)
    # Cold starts, as the SQL Warehouses API shows them: idle seconds before the warehouse
    # stops (0 = never), how long STARTING and STOPPING last, and whether it begins STOPPED.
    auto_stop_s: float = 0.0
    start_s: float = 0.0
    stop_s: float = 0.0
    start_stopped: bool = False
