"""Settings: every problem reported at once, .env loading, environment precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbx_backend.config import ConfigError, load_settings
from tests.conftest import TEST_ENV, TEST_TOKEN


def test_every_problem_is_reported_at_once() -> None:
    env = {"PORT": "abc", "DATABRICKS_HTTP_PATH": "/sql/warehouses/x", "QUERY_TIMEOUT_S": "-1"}

    with pytest.raises(ConfigError) as caught:
        load_settings(env, env_file=None)

    message = str(caught.value)
    for problem in (
        "DATABRICKS_HOST: required",
        "DATABRICKS_HTTP_PATH: must look like",
        "PORT:",
        "QUERY_TIMEOUT_S:",
        "DATABRICKS_TOKEN",
    ):
        assert problem in message


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(
            {"DATABRICKS_HTTP_PATH": ""},
            "DATABRICKS_HTTP_PATH or DATABRICKS_WAREHOUSE_ID",
            id="no-warehouse",
        ),
        pytest.param({"DATABRICKS_TOKEN": ""}, "DATABRICKS_TOKEN", id="no-credential"),
        pytest.param({"DATABRICKS_CLIENT_ID": "abc"}, "set both or neither", id="half-oauth"),
        pytest.param({"DATABRICKS_HOST": "ftp://x"}, "DATABRICKS_HOST", id="bad-scheme"),
        pytest.param({"PORT": "70000"}, "PORT", id="port-range"),
        pytest.param({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", id="log-level"),
        pytest.param(
            {"DATABRICKS_WAREHOUSE_ID": "a/b"}, "DATABRICKS_WAREHOUSE_ID", id="bad-warehouse-id"
        ),
    ],
)
def test_malformed_variables_are_named(change: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings({**TEST_ENV, **change}, env_file=None)


def test_the_secret_never_appears_in_config_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**TEST_ENV, "PORT": "x"}, env_file=None)

    assert TEST_TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(
            "adb-1.2.azuredatabricks.net", "https://adb-1.2.azuredatabricks.net", id="no-scheme"
        ),
        pytest.param(
            "https://x.cloud.databricks.com/", "https://x.cloud.databricks.com", id="trailing-slash"
        ),
        pytest.param("http://127.0.0.1:8765", "http://127.0.0.1:8765", id="local-http"),
    ],
)
def test_the_host_is_normalized(given: str, expected: str) -> None:
    settings = load_settings({**TEST_ENV, "DATABRICKS_HOST": given}, env_file=None)

    assert settings.databricks_host == expected


def test_the_warehouse_id_comes_from_the_http_path_or_the_id() -> None:
    from_path = load_settings(TEST_ENV, env_file=None)
    from_id = load_settings(
        {**TEST_ENV, "DATABRICKS_HTTP_PATH": "", "DATABRICKS_WAREHOUSE_ID": "abc"}, env_file=None
    )

    assert from_path.warehouse_id == "wh123"
    assert from_id.warehouse_id == "abc"


def test_defaults() -> None:
    settings = load_settings(TEST_ENV, env_file=None)

    assert settings.port == 4000
    assert settings.host == "0.0.0.0"
    assert settings.cors_allow_origins == ("http://localhost:3000",)


def test_cors_origins_are_a_comma_list() -> None:
    settings = load_settings(
        {**TEST_ENV, "CORS_ALLOW_ORIGINS": "http://a.test, https://b.test ,"}, env_file=None
    )

    assert settings.cors_allow_origins == ("http://a.test", "https://b.test")


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "DATABRICKS_HOST=from-file.cloud.databricks.com\n"
        "DATABRICKS_HTTP_PATH=/sql/1.0/warehouses/filewh\n"
        "DATABRICKS_TOKEN=file-token\nPORT=5000\n"
    )

    settings = load_settings({"PORT": "6000"}, env_file=env_file)

    assert settings.databricks_host == "https://from-file.cloud.databricks.com"
    assert settings.warehouse_id == "filewh"
    assert settings.port == 6000


def test_the_token_is_a_secret_in_repr() -> None:
    settings = load_settings(TEST_ENV, env_file=None)

    assert TEST_TOKEN not in repr(settings)
    assert TEST_TOKEN not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(
            {"DATABRICKS_HOST": "http://adb-1.azuredatabricks.net"},
            "clear text",
            id="plain-http-remote",
        ),
        pytest.param({"SUBMIT_WAIT_TIMEOUT_S": "3"}, "0 or between 5 and 50", id="wait-range"),
        pytest.param(
            {"STATEMENT_HANDLE_SECRET": "short"}, "at least 16 bytes", id="short-handle-secret"
        ),
        pytest.param(
            {"API_KEYS_FILE": "/nonexistent/keys"}, "cannot be read", id="missing-keys-file"
        ),
    ],
)
def test_unsafe_settings_are_refused(change: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings({**TEST_ENV, **change}, env_file=None)


def test_an_empty_keys_file_is_refused_rather_than_turning_auth_off(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# nothing yet\n\n")

    with pytest.raises(ConfigError, match="holds no key"):
        load_settings({**TEST_ENV, "API_KEYS_FILE": str(keys)}, env_file=None)


@pytest.mark.parametrize(
    "listed", ["", "   ", ",", " , ,, "], ids=["empty", "blank", "comma", "commas"]
)
def test_api_keys_that_list_no_key_are_refused_rather_than_turning_auth_off(listed: str) -> None:
    with pytest.raises(ConfigError, match="API_KEYS: holds no key"):
        load_settings({**TEST_ENV, "API_KEYS": listed}, env_file=None)


def test_api_keys_with_blanks_between_keep_the_keys() -> None:
    settings = load_settings({**TEST_ENV, "API_KEYS": " k1 ,, k2 ,"}, env_file=None)

    assert [k.get_secret_value() for k in settings.api_keys] == ["k1", "k2"]


def test_api_keys_are_merged_and_never_shown(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("file-key-123\n")

    settings = load_settings(
        {**TEST_ENV, "API_KEYS": "env-key-456", "API_KEYS_FILE": str(keys)}, env_file=None
    )

    assert [k.get_secret_value() for k in settings.api_keys] == ["env-key-456", "file-key-123"]
    assert "file-key-123" not in repr(settings)
    assert "env-key-456" not in repr(settings)


def test_cache_and_cold_start_defaults() -> None:
    settings = load_settings(TEST_ENV, env_file=None)

    assert (settings.cache_ttl_s, settings.cache_stale_s, settings.cache_stale_if_error_s) == (
        60,
        0,
        3600,
    )
    assert (settings.cache_max_bytes, settings.cache_max_entry_bytes) == (256 << 20, 8 << 20)
    assert (settings.cache_scope, settings.cache_url) == ("shared", None)
    assert settings.warehouse_auto_start is True
    assert settings.warehouse_start_estimate_s == 120


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param({"CACHE_TTL_S": "-1"}, "CACHE_TTL_S", id="negative-ttl"),
        pytest.param({"CACHE_SCOPE": "everyone"}, "CACHE_SCOPE", id="unknown-scope"),
        pytest.param({"CACHE_URL": "memcached://h"}, "CACHE_URL: must be a Redis URL", id="url"),
        pytest.param(
            {"CACHE_MAX_BYTES": "1000", "CACHE_MAX_ENTRY_BYTES": "2000"},
            "CACHE_MAX_ENTRY_BYTES: must not exceed CACHE_MAX_BYTES",
            id="entry-over-total",
        ),
        pytest.param(
            {"WAREHOUSE_START_ESTIMATE_S": "0"}, "WAREHOUSE_START_ESTIMATE_S", id="no-estimate"
        ),
    ],
)
def test_malformed_cache_settings_are_named(change: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings({**TEST_ENV, **change}, env_file=None)


def test_the_cache_url_password_never_appears() -> None:
    settings = load_settings(
        {**TEST_ENV, "CACHE_URL": "redis://:hunter2-pass@cache:6379/0", "CACHE_SCOPE": "PER_KEY"},
        env_file=None,
    )
    with pytest.raises(ConfigError) as refused:
        load_settings({**TEST_ENV, "CACHE_URL": "http://:hunter2-pass@cache"}, env_file=None)

    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(refused.value)
    assert settings.cache_scope == "per_key"


def test_memory_budget_defaults() -> None:
    settings = load_settings(TEST_ENV, env_file=None)

    assert (settings.memory_budget_mb, settings.memory_wait_s) == (384, 5)


def test_malformed_memory_settings_are_all_named_at_once() -> None:
    change = {"MEMORY_BUDGET_MB": "0", "MEMORY_WAIT_S": "-1"}

    with pytest.raises(ConfigError) as refused:
        load_settings({**TEST_ENV, **change}, env_file=None)

    assert "MEMORY_BUDGET_MB" in str(refused.value)
    assert "MEMORY_WAIT_S" in str(refused.value)
