"""`dbx-backend dev` is not an open door: a secret per run, loopback Host only, sandboxed SQL."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.devprocess import DevProcess, run_dev


def call(url: str, *, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request with urllib (which sends the Host it is given); status and JSON body."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def warehouse_url(dev: DevProcess) -> str:
    match = re.search(r"local warehouse:\s+(http://127\.0\.0\.1:\d+)", dev.output())
    assert match is not None, dev.output()
    return match[1]


def test_dev_refuses_foreign_hosts_reads_no_files_and_prints_no_token(tmp_path: Path) -> None:
    (tmp_path / ".env.secret").write_text("DATABRICKS_TOKEN=dapi-real-canary\n")
    with run_dev(tmp_path) as dev:
        service = f"http://127.0.0.1:{dev.port}"
        warehouse = warehouse_url(dev)
        statements = f"{warehouse}/api/2.0/sql/statements"

        foreign = call(f"{service}/health", headers={"Host": "rebind.attacker.example"})
        loopback = [
            call(f"{service}/health", headers={"Host": f"{host}:{dev.port}"})[0]
            for host in ("localhost", "127.0.0.1", "[::1]")
        ]
        foreign_warehouse = call(f"{statements}/x", headers={"Host": "rebind.attacker.example"})
        old_default_token = call(f"{statements}/x", headers={"Authorization": "Bearer dapi-local"})
        file_read = call(
            f"{service}/api/query",
            body={"sql": f"SELECT content FROM read_text('{tmp_path}/.env.secret')"},  # noqa: S608
        )
        output = dev.output()

    assert foreign[0] == 421
    assert foreign[1]["error"]["code"] == "HOST_NOT_ALLOWED"
    assert loopback == [200, 200, 200]
    assert foreign_warehouse[0] == 421
    assert old_default_token[0] == 401
    status, body = file_read
    assert status == 400
    assert body["error"]["code"] == "SQL_ERROR"
    assert "INSUFFICIENT_PERMISSIONS" in body["error"]["message"]
    assert "canary" not in orjson.dumps(body).decode()
    assert "dapi" not in output  # no token in the banner or the log


def test_dev_takes_the_warehouse_token_it_is_given(tmp_path: Path) -> None:
    with run_dev(tmp_path, "--token", "dapi-chosen-for-test") as dev:
        statements = f"{warehouse_url(dev)}/api/2.0/sql/statements"
        chosen = call(f"{statements}/x", headers={"Authorization": "Bearer dapi-chosen-for-test"})

    assert chosen[0] == 404  # authenticated; no such statement


def test_dev_beyond_loopback_without_api_keys_warns_loudly(tmp_path: Path) -> None:
    with run_dev(tmp_path, "--host", "0.0.0.0") as dev:
        output = dev.output()

    assert "no API_KEYS" in output
