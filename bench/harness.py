"""Benchmark plumbing: free ports, child processes started and stopped for sure, RSS sampling.

Everything here is bounded: waits have deadlines, the sampler stops when told, and every child
started through `ChildProcess` is terminated (then killed) when its `with` block ends.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psutil

MIB = 1024 * 1024
# Variables a child inherits; everything else (DATABRICKS_*, a developer's settings) is dropped.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "PIP_CERT")


def log(message: str) -> None:
    """Progress for a person watching: stderr only, so stdout stays one JSON document."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A small, predictable environment for a child process plus `extra`."""
    env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
    env.update(extra)
    return env


def venv_script(name: str) -> str:
    """A console script installed beside the running interpreter (the project's venv)."""
    return str(Path(sys.executable).parent / name)


class ChildProcess:
    """A subprocess that is always stopped on exit: SIGTERM, then SIGKILL after a grace period."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], *, grace_s: float = 10.0
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.grace_s = grace_s
        self._workdir = tempfile.TemporaryDirectory(prefix="dbx-bench-")
        self._stderr: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ChildProcess:
        # A scratch working directory keeps a developer's `.env` out of the measurement.
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self._workdir.name,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """Terminate the child and wait for it, killing it if it outlives the grace period."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=self.grace_s)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._workdir.cleanup()

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of what the child wrote to stderr, for error reports."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def wait_http(self, url: str, *, timeout_s: float = 60.0, ok_statuses: set[int]) -> None:
        """Poll `url` until it answers with one of `ok_statuses`; fail if the child exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}: {self.stderr_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
                    if answer.status in ok_statuses:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code in ok_statuses:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not answer {url} within {timeout_s}s")


class RssSampler:
    """Peak resident memory of some processes, sampled by a background thread every ~20 ms."""

    def __init__(self, pids: Mapping[str, int], *, interval_s: float = 0.02) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._interval_s = interval_s
        self.before = {name: self._rss(name) for name in self._processes}
        self.peak = dict(self.before)
        self.cpu_before = {name: self._cpu(name) for name in self._processes}
        self.cpu_after = dict(self.cpu_before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _rss(self, name: str) -> int:
        try:
            rss: int = self._processes[name].memory_info().rss
        except psutil.Error:
            return 0
        return rss

    def _cpu(self, name: str) -> float:
        try:
            times = self._processes[name].cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            for name in self._processes:
                self.peak[name] = max(self.peak[name], self._rss(name))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for name in self._processes:  # one last sample, for cases shorter than the interval
            self.peak[name] = max(self.peak[name], self._rss(name))
            self.cpu_after[name] = self._cpu(name)

    def report(self) -> dict[str, dict[str, float]]:
        """RSS before the case and its peak, in MiB, and CPU seconds spent, per process."""
        return {
            name: {
                "rss_before_mib": round(self.before[name] / MIB, 1),
                "peak_rss_mib": round(self.peak[name] / MIB, 1),
                "cpu_s": round(self.cpu_after[name] - self.cpu_before[name], 3),
            }
            for name in self._processes
        }


def summarize(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median and min of repeated measurements (and the raw values)."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]
