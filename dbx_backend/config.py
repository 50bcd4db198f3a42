"""Settings: everything the service reads from its environment, validated all at once.

This is the only module that reads `os.environ`; everything else receives a `Settings`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from dbx_backend.hosts import ANY_HOST, is_loopback

HTTP_PATH_RE = re.compile(r"^/sql/1\.0/warehouses/(?P<id>[A-Za-z0-9_-]+)/?$")
WAREHOUSE_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
HOST_NAME_RE = re.compile(r"^\.?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$")


class ConfigError(Exception):
    """The environment does not describe a runnable service; the message lists every problem."""


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


CommaList = Annotated[tuple[str, ...], BeforeValidator(_comma_list)]
SecretList = Annotated[tuple[SecretStr, ...], BeforeValidator(_comma_list)]
OptionalStr = Annotated[str | None, BeforeValidator(_blank_is_none)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_blank_is_none)]


class Settings(BaseModel):
    """Everything the service reads from its environment (see `.env.example`)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    databricks_host: str = Field(alias="DATABRICKS_HOST", min_length=1)
    databricks_http_path: OptionalStr = Field(default=None, alias="DATABRICKS_HTTP_PATH")
    databricks_warehouse_id: OptionalStr = Field(default=None, alias="DATABRICKS_WAREHOUSE_ID")
    databricks_token: OptionalSecret = Field(default=None, alias="DATABRICKS_TOKEN")
    databricks_client_id: OptionalStr = Field(default=None, alias="DATABRICKS_CLIENT_ID")
    databricks_client_secret: OptionalSecret = Field(default=None, alias="DATABRICKS_CLIENT_SECRET")
    databricks_catalog: OptionalStr = Field(default=None, alias="DATABRICKS_CATALOG")
    databricks_schema: OptionalStr = Field(default=None, alias="DATABRICKS_SCHEMA")

    host: str = Field(default="0.0.0.0", alias="HOST", min_length=1)
    port: int = Field(default=4000, alias="PORT", ge=1, le=65535)
    query_timeout_s: float = Field(default=60.0, alias="QUERY_TIMEOUT_S", gt=0)
    max_query_timeout_s: float = Field(default=300.0, alias="MAX_QUERY_TIMEOUT_S", gt=0)
    cors_allow_origins: CommaList = Field(
        default=("http://localhost:3000",), alias="CORS_ALLOW_ORIGINS"
    )
    allowed_hosts: CommaList = Field(default=(), alias="ALLOWED_HOSTS")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", alias="LOG_LEVEL"
    )

    log_format: Literal["json", "text"] = Field(default="json", alias="LOG_FORMAT")

    # Exposure and limits (see README, "Running in production").
    api_keys: SecretList = Field(default=(), alias="API_KEYS")
    api_keys_file: Path | None = Field(default=None, alias="API_KEYS_FILE")
    read_only: bool = Field(default=True, alias="READ_ONLY")
    allow_adhoc_sql: bool = Field(default=True, alias="ALLOW_ADHOC_SQL")
    queries_dir: Path | None = Field(default=None, alias="QUERIES_DIR")
    max_concurrent_queries: int = Field(default=32, alias="MAX_CONCURRENT_QUERIES", ge=1)
    max_open_statements: int = Field(default=64, alias="MAX_OPEN_STATEMENTS", ge=1)
    max_sql_bytes: int = Field(default=64 * 1024, alias="MAX_SQL_BYTES", ge=16)
    statement_handle_secret: OptionalSecret = Field(default=None, alias="STATEMENT_HANDLE_SECRET")
    statement_handle_ttl_s: float = Field(default=3600.0, alias="STATEMENT_HANDLE_TTL_S", gt=0)
    idempotency_window_s: float = Field(default=600.0, alias="IDEMPOTENCY_WINDOW_S", gt=0)
    submit_wait_timeout_s: int = Field(default=5, alias="SUBMIT_WAIT_TIMEOUT_S", ge=0, le=50)
    slow_query_s: float = Field(default=10.0, alias="SLOW_QUERY_S", gt=0)
    # On SIGTERM/SIGINT, requests in flight get this long; the process is gone 5 s later.
    shutdown_grace_s: float = Field(default=20.0, alias="SHUTDOWN_GRACE_S", ge=0, le=3600)

    http_connect_timeout_s: float = Field(default=10.0, alias="HTTP_CONNECT_TIMEOUT_S", gt=0)
    http_request_timeout_s: float = Field(default=60.0, alias="HTTP_REQUEST_TIMEOUT_S", gt=0)
    max_body_bytes: int = Field(default=1_048_576, alias="MAX_BODY_BYTES", ge=1024)
    body_read_timeout_s: float = Field(default=30.0, alias="BODY_READ_TIMEOUT_S", gt=0)
    max_result_rows: int = Field(default=100_000, alias="MAX_RESULT_ROWS", ge=1)
    max_result_bytes: int = Field(default=64 * 1024 * 1024, alias="MAX_RESULT_BYTES", ge=1024)
    external_links_format: Literal["JSON_ARRAY", "ARROW_STREAM"] = Field(
        default="ARROW_STREAM", alias="EXTERNAL_LINKS_FORMAT"
    )
    download_window: int = Field(default=4, alias="DOWNLOAD_WINDOW", ge=1, le=32)
    # What buffered answers in flight, streams' windows and the result cache hold at once
    # (see README, "Sizing"); a request waits this long for room, then gets 503.
    memory_budget_mb: int = Field(default=384, alias="MEMORY_BUDGET_MB", ge=1)
    memory_wait_s: float = Field(default=5.0, alias="MEMORY_WAIT_S", ge=0, le=300)
    # The dev console at `/` (static page; its API calls need a key when API_KEYS is set).
    # Off for `serve` unless asked for; `dbx-backend dev` turns it on.
    console: bool = Field(default=False, alias="CONSOLE")

    # The result cache, coalescing and cold starts (see README, "Caching and cold starts").
    cache_ttl_s: float = Field(default=60.0, alias="CACHE_TTL_S", ge=0)
    cache_stale_s: float = Field(default=0.0, alias="CACHE_STALE_S", ge=0)
    cache_stale_if_error_s: float = Field(default=3600.0, alias="CACHE_STALE_IF_ERROR_S", ge=0)
    cache_max_bytes: int = Field(default=256 * 1024 * 1024, alias="CACHE_MAX_BYTES", ge=0)
    cache_max_entry_bytes: int = Field(default=8 * 1024 * 1024, alias="CACHE_MAX_ENTRY_BYTES", ge=0)
    cache_scope: Literal["shared", "per_key"] = Field(default="shared", alias="CACHE_SCOPE")
    cache_url: OptionalSecret = Field(default=None, alias="CACHE_URL")
    cache_redis_timeout_s: float = Field(default=0.25, alias="CACHE_REDIS_TIMEOUT_S", gt=0, le=10)
    warehouse_auto_start: bool = Field(default=True, alias="WAREHOUSE_AUTO_START")
    warehouse_start_estimate_s: float = Field(
        default=120.0, alias="WAREHOUSE_START_ESTIMATE_S", gt=0
    )

    @field_validator("databricks_host")
    @classmethod
    def _normalize_host(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if "://" not in value:
            value = f"https://{value}"
        scheme, _, rest = value.partition("://")
        if scheme not in ("https", "http") or not rest or "/" in rest or " " in rest:
            raise ValueError("must be a workspace host such as adb-123.4.azuredatabricks.net")
        if scheme == "http" and not is_loopback(rest.rsplit(":", 1)[0]):
            raise ValueError("http:// sends the credential in clear text: use https://")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if name != ANY_HOST and not HOST_NAME_RE.match(name)]
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: must be host names (api.example.com, .example.com for "
                "subdomains) or *, without scheme, port or path"
            )
        return tuple(name.lower() for name in value)

    @field_validator("databricks_http_path")
    @classmethod
    def _check_http_path(cls, value: str | None) -> str | None:
        if value is not None and not HTTP_PATH_RE.match(value.strip()):
            raise ValueError("must look like /sql/1.0/warehouses/<warehouse-id>")
        return value.strip() if value else value

    @field_validator("databricks_warehouse_id")
    @classmethod
    def _check_warehouse_id(cls, value: str | None) -> str | None:
        if value is not None and not WAREHOUSE_ID_RE.match(value.strip()):
            raise ValueError("must be letters, digits, '-' or '_'")
        return value.strip() if value else value

    @field_validator("submit_wait_timeout_s")
    @classmethod
    def _wait_in_protocol_range(cls, value: int) -> int:
        if 0 < value < 5:
            raise ValueError("must be 0 or between 5 and 50 (the warehouse's wait_timeout)")
        return value

    @field_validator("cache_url")
    @classmethod
    def _check_cache_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            # The URL may hold a password: the message never repeats it.
            raise ValueError("must be a Redis URL: redis://host:port/db (or rediss://, unix://)")
        return value

    @field_validator("cache_scope", mode="before")
    @classmethod
    def _lower_cache_scope(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("statement_handle_secret")
    @classmethod
    def _long_enough_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("must be at least 16 bytes (use 32 random bytes, e.g. base64)")
        return value

    @field_validator("queries_dir", "api_keys_file", mode="before")
    @classmethod
    def _blank_path_is_none(cls, value: Any) -> Any:
        return _blank_is_none(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def warehouse_id(self) -> str:
        """The warehouse id, from `DATABRICKS_WAREHOUSE_ID` or the last part of the HTTP path."""
        if self.databricks_warehouse_id:
            return self.databricks_warehouse_id
        match = HTTP_PATH_RE.match(self.databricks_http_path or "")
        if match is None:  # load_settings guarantees one of the two
            raise ConfigError("no warehouse id configured")
        return match["id"]


def _read_api_keys_file(path: Path) -> tuple[list[str], str | None]:
    """Keys from a file (one per line, `#` comments), or the problem with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [], f"API_KEYS_FILE: cannot be read ({exc.strerror or 'error'})"
    keys = [line.strip() for line in text.splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        return [], "API_KEYS_FILE: holds no key (an empty file would turn authentication off)"
    return keys, None


def _cross_field_problems(values: Mapping[str, str | None]) -> list[str]:
    def present(name: str) -> bool:
        return bool((values.get(name) or "").strip())

    problems = []
    if not present("DATABRICKS_HTTP_PATH") and not present("DATABRICKS_WAREHOUSE_ID"):
        problems.append("DATABRICKS_HTTP_PATH or DATABRICKS_WAREHOUSE_ID: one of them is required")
    has_oauth = present("DATABRICKS_CLIENT_ID") or present("DATABRICKS_CLIENT_SECRET")
    if not present("DATABRICKS_TOKEN") and not has_oauth:
        problems.append(
            "DATABRICKS_TOKEN (or DATABRICKS_CLIENT_ID + DATABRICKS_CLIENT_SECRET): required"
        )
    elif has_oauth and not (
        present("DATABRICKS_CLIENT_ID") and present("DATABRICKS_CLIENT_SECRET")
    ):
        problems.append("DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET: set both or neither")
    return problems


def _cache_problems(values: Mapping[str, str | None]) -> list[str]:
    """CACHE_MAX_ENTRY_BYTES above CACHE_MAX_BYTES could never be honoured."""
    try:
        total = int(values.get("CACHE_MAX_BYTES") or 256 * 1024 * 1024)
        entry = int(values.get("CACHE_MAX_ENTRY_BYTES") or 8 * 1024 * 1024)
    except ValueError:
        return []  # the field validators name the malformed one
    if entry > total:
        return ["CACHE_MAX_ENTRY_BYTES: must not exceed CACHE_MAX_BYTES"]
    return []


def _describe(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        message = error["msg"]
        if error["type"] == "missing":
            message = "required"
        lines.append(f"{name}: {message.removeprefix('Value error, ')}")
    return lines


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = Path(".env"),
    overrides: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
) -> Settings:
    """Merge `env_file` under the environment (the environment wins) and validate all at once.

    `overrides` win over both and `defaults` yield to both; `dbx-backend dev` uses them to point
    at the local warehouse and to turn the console on unless `CONSOLE` says otherwise.
    Raises ConfigError listing every missing or malformed variable, one per line.
    """
    values: dict[str, str | None] = dict(defaults or {})
    if env_file is not None and env_file.is_file():
        values.update(dotenv_values(env_file))  # read, never written into os.environ
    values.update(os.environ if environ is None else environ)
    values.update(overrides or {})
    problems = _cross_field_problems(values)
    listed_keys = values.get("API_KEYS")
    if listed_keys is not None and not _comma_list(listed_keys):
        problems.append(
            "API_KEYS: holds no key (blank or only commas would turn authentication off); "
            "list at least one key, or remove the variable to run without keys"
        )
    keys_file = (values.get("API_KEYS_FILE") or "").strip()
    if keys_file:
        file_keys, problem = _read_api_keys_file(Path(keys_file))
        problems += [problem] if problem else []
        values["API_KEYS"] = ",".join(filter(None, [values.get("API_KEYS") or "", *file_keys]))
    problems += _cache_problems(values)
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        problems = _describe(exc) + problems
        settings = None
    if problems or settings is None:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return settings
