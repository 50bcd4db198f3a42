"""The README's quick start: `dbx-backend dev` serves the sample data and answers its curl."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.devprocess import run_dev

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def dev_service(tmp_path: Path) -> Iterator[int]:
    """`dbx-backend dev` in a directory with no .env, until /health answers."""
    with run_dev(tmp_path) as dev:
        yield dev.port


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
