"""The README's quick start: `dbx-backend dev` serves the sample data and answers its curl."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def dev_service(tmp_path: Path) -> Iterator[int]:
    """`dbx-backend dev` in a directory with no .env, until /health answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    log = tmp_path / "dev.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "dbx_backend", "dev", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(300):  # up to ~30 s on a loaded machine
                if process.poll() is not None:
                    pytest.fail(f"dbx-backend dev exited: {log.read_text()}")
                try:
                    health = f"http://127.0.0.1:{port}/health"
                    with urllib.request.urlopen(health, timeout=1):
                        break
                except OSError:
                    time.sleep(0.1)
            else:
                pytest.fail("dbx-backend dev did not answer /health in time")
            yield port
        finally:
            process.terminate()
            process.wait(15)


def readme_curl_body() -> bytes:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"curl -s http://localhost:4000/api/query .*?-d '(\{.*?\})'", readme, re.S)
    assert match is not None, "the README's quick start curl example"
    return match[1].encode()


def test_the_readme_curl_example_answers_from_the_sample_data(dev_service: int) -> None:
    port = dev_service
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/query",
        data=readme_curl_body(),
        headers={"Content-Type": "application/json"},
    )

    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        body = orjson.loads(response.read())

    assert [c["name"] for c in body["columns"]] == ["pickup_zip", "trips", "avg_fare"]
    assert body["row_count"] == 5
    trips = [row[1] for row in body["rows"]]
    assert trips == sorted(trips, reverse=True)
    assert all(isinstance(t, int) and t > 0 for t in trips)


def test_the_dev_banner_names_the_browser_origins_allowed(dev_service: int, tmp_path: Path) -> None:
    banner = (tmp_path / "dev.log").read_text()

    assert "browser origins:  http://localhost:3000  (CORS_ALLOW_ORIGINS)" in banner
