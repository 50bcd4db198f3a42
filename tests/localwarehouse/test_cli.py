"""`dbx-backend warehouse`: its options, and the process printing settings and stopping."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from dbx_backend.localwarehouse.cli import add_arguments, config_from_args


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_match_the_documented_command() -> None:
    config = config_from_args(parse())

    assert (config.host, config.port, config.token, config.warehouse_id) == (
        "127.0.0.1",
        8765,
        "dapi-local",
        "local",
    )


def test_options_reach_the_configuration(tmp_path: Path) -> None:
    config = config_from_args(
        parse(
            "--port", "0", "--token", "t", "--warehouse-id", "w", "--chunk-rows", "5",
            "--data", str(tmp_path), "--admin", "--oauth-client", "app:s3cret",
        )
    )  # fmt: skip

    assert (config.port, config.token, config.warehouse_id, config.chunk_rows) == (0, "t", "w", 5)
    assert (config.data_dir, config.admin_enabled) == (tmp_path, True)
    assert dict(config.oauth_clients) == {"app": "s3cret"}


def test_cold_start_options_reach_the_configuration() -> None:
    config = config_from_args(
        parse("--auto-stop-s", "600", "--start-s", "2.5", "--stop-s", "1", "--stopped")
    )

    assert (config.auto_stop_s, config.start_s, config.stop_s) == (600, 2.5, 1)
    assert config.start_stopped is True


def test_by_default_the_warehouse_runs_and_never_stops() -> None:
    config = config_from_args(parse())

    assert (config.auto_stop_s, config.start_s, config.start_stopped) == (0, 0, False)


@pytest.mark.parametrize("value", ["-1", "soon", "inf"])
def test_seconds_options_refuse_what_is_not_a_duration(value: str) -> None:
    with pytest.raises(SystemExit):
        parse("--start-s", value)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("--oauth-client", "no-secret"), id="client-without-secret"),
        pytest.param(("--data", "/nonexistent-dir"), id="data-not-a-directory"),
    ],
)
def test_bad_options_stop_with_a_message(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        config_from_args(parse(*argv))


def test_the_process_prints_its_settings_serves_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "dbx_backend.localwarehouse.cli", "--port", "0"]
    with subprocess.Popen(
        [*command, "--token", "tk"], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            lines = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
            url = lines["DATABRICKS_HOST"] + "/api/2.0/sql/statements/none"
            assert url.startswith("http://127.0.0.1:")
            request = urllib.request.Request(url, headers={"Authorization": "Bearer tk"})  # noqa: S310
            with pytest.raises(urllib.error.HTTPError) as not_found:
                urllib.request.urlopen(request, timeout=5)  # noqa: S310 - loopback URL we started
            not_found.value.close()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=10)
        finally:
            process.kill()

    assert lines["DATABRICKS_HTTP_PATH"] == "/sql/1.0/warehouses/local"
    assert lines["DATABRICKS_TOKEN"] == "tk"
    assert not_found.value.code == 404
    assert code == 0
