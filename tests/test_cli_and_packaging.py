"""The command line, the Dockerfile's commands against the real package, the error table."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from dbx_backend import queries, sqlpolicy
from dbx_backend.api import errors as api_errors
from dbx_backend.api import guards
from dbx_backend.cli import main
from dbx_backend.engine import gate, handles, idempotency, limiter, open_statements, parameters
from dbx_backend.readiness import NotReady
from dbx_backend.warehouse import errors as dbx

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbx_backend", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def test_serve_with_a_bad_environment_exits_2_listing_every_problem(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "PORT"))}
    env["PORT"] = "not-a-port"

    result = run_cli("serve", env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "DATABRICKS_HOST: required" in result.stderr
    assert "PORT:" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_api_keys_that_list_no_key_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "API_KEYS"))}
    env |= {
        "DATABRICKS_HOST": "https://adb-1.azuredatabricks.net",
        "DATABRICKS_WAREHOUSE_ID": "abc",
        "DATABRICKS_TOKEN": "dapi-x",
        "API_KEYS": " , ",
    }

    result = run_cli("serve", env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "API_KEYS: holds no key" in result.stderr
    assert "Traceback" not in result.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])

    assert caught.value.code == 0
    assert re.match(r"dbx-backend \d+\.\d+\.\d+", capsys.readouterr().out)


def test_the_dockerfile_starts_the_console_script_the_package_declares() -> None:
    cmd = re.search(r'^CMD \["([^"]+)", "([^"]+)"\]', DOCKERFILE, re.MULTILINE)

    assert cmd is not None
    assert cmd[1] in PYPROJECT["project"]["scripts"]
    assert PYPROJECT["project"]["scripts"][cmd[1]] == "dbx_backend.cli:main"
    assert cmd[2] == "serve"
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    assert "dbx-backend" in scripts


def test_the_dockerfile_installs_no_extras_and_runs_as_non_root() -> None:
    install = re.search(r"pip install (\S+)", DOCKERFILE)

    assert install is not None
    assert install[1] == "."  # runtime dependencies only: no [dev], no [local]
    assert re.search(r"^USER \d+$", DOCKERFILE, re.MULTILINE)
    assert "EXPOSE 4000" in DOCKERFILE
    assert "HEALTHCHECK" in DOCKERFILE
    assert "/health" in DOCKERFILE
    copied = re.findall(r"^COPY (.+) \./?\S*$", DOCKERFILE, re.MULTILINE)
    for line in copied:
        for name in line.split():
            assert (ROOT / name).exists(), name


def test_the_healthcheck_command_reaches_a_running_service() -> None:
    check = re.search(r'CMD \["python", "-c", "(.+)"\]\n', DOCKERFILE)
    assert check is not None
    code = check[1].replace('\\"', '"')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "from aiohttp import web\n"
                "app = web.Application()\n"
                "app.router.add_get('/health', lambda r: web.json_response({'status': 'ok'}))\n"
                f"web.run_app(app, host='127.0.0.1', port={port}, print=None)\n"
            ),
        ],
    )
    try:
        ok = False
        for _ in range(100):
            result = subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, "PORT": str(port)},
                capture_output=True,
                timeout=10,
                check=False,
            )
            if result.returncode == 0:
                ok = True
                break
            time.sleep(0.05)  # the server is starting in another process
        assert ok
    finally:
        server.terminate()
        server.wait(10)


def test_the_extras_the_docs_name_exist() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]

    assert {"local", "dev"} <= set(extras)
    assert any(dep.startswith("duckdb") for dep in extras["local"])


def _exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    engine_modules = (gate, limiter, handles, idempotency, open_statements, parameters)
    for module in (dbx, guards, sqlpolicy, queries, api_errors, *engine_modules):
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, Exception)
            and value.__module__ == module.__name__
        ]
    return [*found, NotReady]


def test_every_error_class_has_a_response_row() -> None:
    """Nothing we raise on purpose falls through to a 500."""
    ignored = {queries.QueryFileError}  # start-up only: stops the service before it serves
    table = api_errors.ERROR_RESPONSES
    unmapped = [
        c.__name__
        for c in _exception_classes()
        if c not in ignored and not any(base in table for base in c.__mro__)
    ]

    assert unmapped == []


def test_every_error_code_is_in_the_readmes_error_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Errors") :]
    # The row of a base class that is never raised itself (a fallback for future subclasses).
    fallbacks = {"SQL_NOT_ACCEPTED"}
    codes = {row.code for row in api_errors.ERROR_RESPONSES.values()} | {api_errors.INTERNAL.code}

    assert sorted(c for c in codes - fallbacks if f"`{c}`" not in table) == []


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [
        pytest.param("0.0.0.0", "", True, id="exposed-without-keys"),
        pytest.param("0.0.0.0", "k1", False, id="exposed-with-keys"),
        pytest.param("127.0.0.1", "", False, id="loopback"),
    ],
)
def test_serving_beyond_loopback_without_keys_warns_loudly(
    caplog: pytest.LogCaptureFixture, host: str, keys: str, warned: bool
) -> None:
    from dbx_backend.cli import warn_if_exposed
    from dbx_backend.config import load_settings
    from tests.conftest import TEST_ENV

    listed = {"API_KEYS": keys} if keys else {}  # a blank API_KEYS is refused at start
    warn_if_exposed(load_settings({**TEST_ENV, "HOST": host, **listed}, env_file=None))

    assert any("no API_KEYS" in r.getMessage() for r in caplog.records) is warned
