"""A lean HTTP/1.1 load generator: keep-alive connections sending one prepared request's bytes
and reading each answer by its Content-Length.

A full client (aiohttp's) spends more CPU per request than the service does on a cache hit or
`/health`; on a machine whose cores the client shares with the service, it would measure the
client. This one costs a few microseconds per request, so the service is what is measured.
Loopback only; every read has a timeout.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

READ_TIMEOUT_S = 30.0


@dataclass
class LoadResult:
    """What one load measured."""

    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        """Answers per second of wall time."""
        return len(self.latencies_s) / self.seconds if self.seconds > 0 else 0.0


def request_bytes(method: str, path: str, port: int, body: bytes | None = None) -> bytes:
    """A keep-alive request, as a client sends it."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: keep-alive"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def _connection(port: int, request: bytes, count: int, result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(request)
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
            result.latencies_s.append(time.perf_counter() - started)
            status = int(head[9:12])
            result.statuses[status] = result.statuses.get(status, 0) + 1
    finally:
        writer.close()
        await writer.wait_closed()


async def load(
    port: int, method: str, path: str, body: bytes | None, *, requests: int, concurrency: int
) -> LoadResult:
    """`requests` requests over `concurrency` connections to 127.0.0.1:`port`."""
    request = request_bytes(method, path, port, body)
    share, rest = divmod(requests, concurrency)
    result = LoadResult(0.0)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for index in range(concurrency):
            count = share + (1 if index < rest else 0)
            group.create_task(_connection(port, request, count, result))
    result.seconds = time.perf_counter() - started
    return result
