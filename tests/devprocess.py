"""`dbx-backend dev` as a real process, for tests of what a developer runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class DevProcess:
    """A running `dbx-backend dev`: its service port, its output so far, its process."""

    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def run_dev(
    workdir: Path, *args: str, env: dict[str, str] | None = None, ready_host: str = "127.0.0.1"
) -> Iterator[DevProcess]:
    """Start `dbx-backend dev` in `workdir` (no .env there) and wait until /health answers."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    log = workdir / "dev.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "dbx_backend", "dev", "--port", str(port), *args],
            cwd=workdir,
            env={**base, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(300):  # up to ~30 s on a loaded machine
                if process.poll() is not None:
                    pytest.fail(f"dbx-backend dev exited: {log.read_text()}")
                try:
                    health = f"http://{ready_host}:{port}/health"
                    with urllib.request.urlopen(health, timeout=1):
                        break
                except OSError:
                    time.sleep(0.1)
            else:
                pytest.fail("dbx-backend dev did not answer /health in time")
            yield DevProcess(port, log, process)
        finally:
            process.terminate()
            process.wait(30)
