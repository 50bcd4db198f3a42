"""An outside probe: hundreds of malformed and hostile requests against the real service.

Starts `dbx-backend dev` on loopback (the local warehouse with a known token, the service with
known API keys and the repository's named queries), sends every request below to every route,
stops the service, then reads its output. Fails (exit 1) on any 5xx, any error on /api/* whose
body is not the JSON error envelope, any `Server` header other than `dbx-backend`, any ERROR
line or stack trace in the log, and any secret (the Databricks token, an API key) in a response
or an output line. Prints its figures as one JSON object.

Usage: .venv/bin/python scripts/probe.py [--verbose]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import gzip
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
TOKEN = f"dapi-probe-{secrets.token_hex(16)}"
KEY = f"probe-key-{secrets.token_hex(16)}"
OTHER_KEY = f"probe-other-{secrets.token_hex(16)}"
SECRETS = (TOKEN, KEY, OTHER_KEY)
BODY_READ_TIMEOUT_S = 1.0
MAX_BODY_BYTES = 65_536
START_LIMIT_S = 60.0
REQUEST_LIMIT_S = 20.0
RUN_LIMIT_S = 150.0
ROUTES = (
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/api/query",
    "/api/queries",
    "/api/queries/{name}",
    "/api/statements",
    "/api/statements/{id}",
    "/api/statements/{id}/rows",
    "unknown",
    "malformed",
)


@dataclass
class Case:
    """One request: `path` is sent exactly as written (already percent-encoded)."""

    route: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    key: str | None = KEY


@dataclass
class RawCase:
    """Bytes written to a socket as they are, in parts with a pause between them."""

    route: str
    parts: tuple[bytes, ...]
    pause_s: float = 0.0


@dataclass
class Findings:
    """What the probe saw."""

    sent: int = 0
    by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    routes: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    http_layer: int = 0  # answered by aiohttp's HTTP layer, before routing

    def fail(self, what: str) -> None:
        self.failures.append(what)


def j(value: Any) -> bytes:
    """JSON bytes; Python's encoder, since probes carry integers past 64 bits."""
    return json.dumps(value).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the requests ---------------------------------------------------------------------------

BAD_JSON = [
    b"",
    b" ",
    b"{",
    b"}",
    b"[]",
    b"null",
    b"0",
    b'"SELECT 1"',
    b'{"sql": "SELECT 1"',
    b'{"sql": "SELECT 1"} trailing',
    b'{"sql": "SELECT 1",}',
    b"{'sql': 'SELECT 1'}",
    b'{"sql": "SELECT 1", "sql": "SELECT 2"}',
    b"\xef\xbb\xbf" + b'{"sql": "SELECT 1"}',
    '{"sql": "SELECT 1"}'.encode("utf-16"),
    b'{"sql": "SELECT \xff\xfe"}',
    b'{"sql": "SELECT \\ud800"}',
    b'{"sql": "SELECT \\u0000"}',
    b'{"sql": NaN}',
    b'{"sql": "SELECT 1", "row_limit": NaN}',
    b'{"sql": "SELECT 1", "timeout_s": -Infinity}',
    b'{"sql": "SELECT 1", "row_limit": 1e400}',
    b'{"sql": "SELECT 1", "row_limit": 1' + b"0" * 5000 + b"}",
    b"[" * 50_000,
    b'{"a":' * 20_000,
    b'{"sql": "' + b"\\" * 1001 + b'"}',
]
WRONG_TYPES: list[dict[str, Any]] = [
    {"sql": 1},
    {"sql": None},
    {"sql": ["SELECT 1"]},
    {"sql": {"q": "SELECT 1"}},
    {"sql": True},
    {"sql": ""},
    {"sql": "   \n\t  "},
    {"sql": "SELECT 1", "params": []},
    {"sql": "SELECT 1", "params": "x"},
    {"sql": "SELECT :x", "params": {"x": [1, 2]}},
    {"sql": "SELECT :x", "params": {"x": {"a": 1}}},
    {"sql": "SELECT :x", "params": {"bad name": 1}},
    {"sql": "SELECT :x", "params": {"x;DROP": 1}},
    {"sql": "SELECT :x", "params": {"x": {"value": [1], "type": "INT"}}},
    {"sql": "SELECT :x", "params": {"x": {"value": 1, "type": "INT); DROP TABLE t; --"}}},
    {"sql": "SELECT :x", "params": {"x": {"value": 1}}},
    {"sql": "SELECT :x", "params": {"x": {"value": 1, "type": "INT", "extra": 1}}},
    {"sql": "SELECT :x", "params": {"x": {"value": "zz", "type": "DATE"}}},
    {"sql": "SELECT :x", "params": {"x": {"value": 10**40, "type": "DECIMAL(38,0)"}}},
    {"sql": "SELECT :x", "params": {"x": {"value": 10**30, "type": "INT"}}},
    {"sql": "SELECT :x", "params": {"x": {"value": "1", "type": "HUGEINT"}}},
    {"sql": "SELECT :x", "params": {"x": {"value": "1", "type": "INTERVAL DAY TO SECOND"}}},
    {"sql": "SELECT :x", "params": {"x": 2**63}},
    {"sql": "SELECT :x", "params": {"x": -(2**63) - 1}},
    {"sql": "SELECT :x", "params": {"x": 10**300}},
    {"sql": "SELECT :x", "params": {"x": 1e308}},
    {"sql": "SELECT :x", "params": {"x": "\u0000\u202e\ud7ff"}},
    {"sql": "SELECT :x", "params": {"x": "x" * 60_000}},
    {"sql": "SELECT :y", "params": {"x": 1}},
    {"sql": "SELECT 1", "row_limit": "5"},
    {"sql": "SELECT 1", "row_limit": 0},
    {"sql": "SELECT 1", "row_limit": -1},
    {"sql": "SELECT 1", "row_limit": 1.5},
    {"sql": "SELECT 1", "row_limit": True},
    {"sql": "SELECT 1", "row_limit": 2**53},
    {"sql": "SELECT 1", "row_limit": 2**64},
    {"sql": "SELECT 1", "row_limit": 10**100},
    {"sql": "SELECT 1", "row_limit": -(10**100)},
    {"sql": "SELECT 1", "row_limit": 2**53 - 1},
    {"sql": "SELECT 1", "timeout_s": "1"},
    {"sql": "SELECT 1", "timeout_s": 0},
    {"sql": "SELECT 1", "timeout_s": -1},
    {"sql": "SELECT 1", "timeout_s": 1e308},
    {"sql": "SELECT 1", "timeout_s": 86_401},
    {"sql": "SELECT 1", "timeout_s": 86_400},
    {"sql": "SELECT 1", "long_as_string": "yes"},
    {"sql": "SELECT 1", "long_as_string": 1},
    {"sql": "SELECT 1", "disposition": "BOGUS"},
    {"sql": "SELECT 1", "disposition": 1},
    {"sql": "SELECT 1", "disposition": "EXTERNAL_LINKS"},
    {"sql": "SELECT 1", "catalog": "a;b"},
    {"sql": "SELECT 1", "catalog": "`"},
    {"sql": "SELECT 1", "catalog": "\u0000"},
    {"sql": "SELECT 1", "catalog": "c" * 300},
    {"sql": "SELECT 1", "catalog": 1},
    {"sql": "SELECT 1", "catalog": "no_such_catalog"},
    {"sql": "SELECT 1", "schema": "no_such_schema"},
    {"sql": "SELECT 1", "schema": "../../etc"},
    {"sql": "SELECT 1", "unknown": 1},
    {"sql": "SELECT 1", "Sql": "SELECT 2"},
]
HOSTILE_SQL = [
    "SELECT 1; SELECT 2",
    "DROP TABLE samples.nyctaxi.trips",
    "INSERT INTO t VALUES (1)",
    "DELETE FROM samples.nyctaxi.trips",
    "CREATE TABLE x AS SELECT 1",
    "COPY (SELECT 1) TO '/tmp/probe.csv'",
    "ATTACH '/tmp/probe.db' AS p",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA database_list",
    "SET enable_external_access = true",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('http://127.0.0.1:1/x.parquet')",
    "SELECT * FROM glob('/*')",
    "SELECT content FROM read_blob('.env')",
    "SELECT getenv('HOME')",
    "SELECT current_setting('temp_directory')",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_extensions()",
    "EXPORT DATABASE '/tmp/probe'",
    "SELECT 1 /* ; DROP TABLE t */",
    "SELECT 1 -- ; DROP TABLE t",
    "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
    "SELECT 170141183460469231731687303715884105727",
    "SELECT 170141183460469231731687303715884105727 * 2",
    "SELECT 9223372036854775807 + 1",
    "SELECT sum(9223372036854775807) FROM range(3)",
    "SELECT 1 LIMIT 99999999999999999999999",
    "SELECT 1 LIMIT -1",
    "SELECT CAST(300 AS TINYINT)",
    "SELECT CAST('x' AS BIGINT)",
    "SELECT CAST(1 AS HUGEINT)",
    "SELECT 99999999999999999999999999999999999999999",
    "SELECT 1e999",
    "SELECT 'a' + 1",
    "SELECT array(1, 2) + 1",
    "SELECT 1/0",
    "SELECT raise_error('probe')",
    "SELECT sleep_ms(-1)",
    "SELECT * FROM no_such_table",
    "SELECT no_such_column FROM samples.nyctaxi.trips",
    "SELECT no_such_function(1)",
    "SELECT * FROM samples.tpch.customer LIMIT 3",
    "SELECT * FROM samples.nyctaxi.trips LIMIT 2",
    "SELECT '\u202eevil', '\U0001f600', '\u0000'",
    "SELECT ':x'",
    "SELECT :x",
    "SELECT ${x}",
    "SELECT ?",
    "SELECT $1",
    "SELECT " + "(" * 3000 + "1" + ")" * 3000,
    "SELECT " + " + ".join(["1"] * 5000),
    "SELECT 1 WHERE 1 IN (" + ",".join(map(str, range(8000))) + ")",
    "SELECT '" + "x" * 60_000 + "'",
    "\u0000",
    "SEL\u0000ECT 1",
    "SELECT 1\r\nFROM\x0b(SELECT 1)",
    "EXPLAIN SELECT 1",
    "SHOW TABLES",
    "DESCRIBE samples.nyctaxi.trips",
    "VALUES (1), (2)",
    "SELECT * FROM range(10000000000)",
]
BAD_HANDLES = [
    "x",
    "0",
    "-1",
    "%00",
    "%2e%2e",
    "..%2F..%2Fetc%2Fpasswd",
    "%0A%0DInjected:%20yes",
    "%F0%9F%98%80",
    "%FF%FE",
    "a" * 10_000,
    "AQAAAAA",
    "AQAAAABrDNqRADRlMzNhZDM1LTllYzItNDJlYS1hMTNjLTM1Y2NlYTU4ZWE0NDcGbggtfFAf",
    base64.urlsafe_b64encode(b"\x01" + b"\xff" * 80).decode().rstrip("="),
    base64.urlsafe_b64encode(b"\x02" + b"\x00" * 80).decode().rstrip("="),
    "01f0d1e2-0000-0000-0000-000000000000",
]
QUERY_STRINGS = [
    "",
    "?offset=-1",
    "?offset=1.5",
    "?offset=1e3",
    "?offset=%D9%A3",
    "?offset=" + "9" * 40,
    "?offset=9007199254740991",
    "?offset=9007199254740992",
    "?offset=",
    "?offset=0&offset=1",
    "?limit=0",
    "?limit=-5",
    "?limit=10001",
    "?limit=9007199254740992",
    "?limit=%00",
    "?limit=1&extra=%0A",
    "?" + "a=1&" * 2000,
]
NAMES = [
    "no_such_query",
    "fares_by_hour",
    "top_customers",
    "trips_by_zip",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "a" * 3000,
    "%F0%9F%98%80",
    "fares_by_hour%00",
    "fares_by_hour.sql",
    "%0Aforged",
]
NAMED_BODIES: list[bytes] = [
    b"",
    b"{}",
    b"[]",
    b"{",
    j({"params": {"zip": 10001}}),
    j({"params": {"zip": "10001"}}),
    j({"params": {"zip": 2**63}}),
    j({"params": {"zip": 10**40}}),
    j({"params": {"zip": 1.5}}),
    j({"params": {"zip": None}}),
    j({"params": {"zip": [1]}}),
    j({"params": {"zip": 10001, "since": "not a date"}}),
    j({"params": {"zip": 10001, "since": "9999-99-99"}}),
    j({"params": {"zip": 10001, "limit": -1}}),
    j({"params": {"zip": 10001, "limit": 2**31}}),
    j({"params": {"zip": 10001, "unknown": 1}}),
    j({"params": {"start": "2016-01-01 00:00:00", "stop": "x"}}),
    j({"params": {"min_distance": "NaN"}}),
    j({"params": {"min_distance": 1e308}}),
    j({"params": {"min_total": "1e999"}}),
    j({"params": {"min_total": "12345678901234567890.123"}}),
    j({"params": {"segment": "'; DROP TABLE t; --"}}),
    j({"params": {"zip": 10001}, "row_limit": 2**53}),
    j({"params": {"zip": 10001}, "timeout_s": -1}),
    j({"params": {"zip": 10001}, "sql": "SELECT 1"}),
]
ENCODINGS: list[tuple[str, bytes]] = [
    ("gzip", gzip.compress(b'{"sql": "SELECT 1"}')),
    ("deflate", zlib.compress(b'{"sql": "SELECT 1"}')),
    ("gzip", b"\x1f\x8b\x08\x00 not gzip"),
    ("gzip", gzip.compress(b'{"sql": "SELECT 1"}')[:-8]),
    ("gzip", b'{"sql": "SELECT 1"}'),
    ("deflate", b"\x00\x01\x02\x03"),
    ("br", b'{"sql": "SELECT 1"}'),
    ("zstd", b'{"sql": "SELECT 1"}'),
    ("compress", b'{"sql": "SELECT 1"}'),
    ("gzip, gzip", gzip.compress(gzip.compress(b'{"sql": "SELECT 1"}'))),
    ("identity", b'{"sql": "SELECT 1"}'),
    ("\u00e9", b'{"sql": "SELECT 1"}'),
    ("gzip", gzip.compress(b" " * (MAX_BODY_BYTES * 50))),
]
CONTENT_TYPES = [
    "",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/jsonx",
    "APPLICATION/JSON",
    "application/json, text/plain",
]
ACCEPTS = [
    "text/csv",
    "application/x-ndjson",
    "application/ndjson",
    "text/csv;q=0",
    "*/*",
    "image/png",
    "text/csv, application/x-ndjson",
    "\u00e9",
    "a" * 4000,
]
HEADER_SETS: list[dict[str, str]] = [
    {"X-Request-ID": "<script>alert(1)</script>"},
    {"X-Request-ID": "a" * 5000},
    {"X-Request-ID": "ok-id.1:2"},
    {"X-Request-ID": "\u00e9\u00e8"},
    {"Idempotency-Key": "\u00e9"},
    {"Idempotency-Key": "k" * 300},
    {"Idempotency-Key": ""},
    {"Idempotency-Key": "probe-key"},
    {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    {"Origin": "null"},
    {"Host": "evil.example"},
    {"Host": "127.0.0.1.evil.example"},
    {"Host": ""},
    {"Host": "[::1]:1"},
    {"Host": "localhost"},
    {"Forwarded": "for=1.2.3.4", "X-Forwarded-For": "1.2.3.4", "X-Forwarded-Host": "evil"},
    {"Expect": "100-continue"},
    {"Expect": "nonsense"},
    {"Connection": "upgrade", "Upgrade": "websocket"},
    {"Range": "bytes=0-1"},
    {"Transfer-Encoding": "identity"},
]
AUTH_VARIANTS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Basic {KEY}"},
    {"Authorization": f"Bearer {KEY}x"},
    {"Authorization": f"Bearer {KEY[:-1]}"},
    {"Authorization": f"bearer   {KEY}   "},
    {"Authorization": "Bearer " + "k" * 7000},
    {"Authorization": "Bearer \u00e9"},
    {"X-API-Key": KEY},
]
UNKNOWN_PATHS = [
    "/",
    "/api",
    "/api/",
    "/api/unknown",
    "/api/query/extra",
    "/api/queries/",
    "/api/statements/",
    "//api//query",
    "/API/QUERY",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/api/%2e%2e/health",
    "/health%00",
    "/health%0A2099-01-01%20INFO%20forged",
    "/health%0D%0AX-Injected:%20yes",
    "/%F0%9F%98%80",
    "/" + "a" * 7000,
    "/.env",
    "/admin",
    "/_admin/faults",
    "/api/2.0/sql/statements",
    "/favicon.ico",
    "/metrics/",
    "/openapi.yaml",
]
OPERATIONAL = ["/health", "/ready", "/metrics", "/openapi.json"]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "PROPFIND"]


def cases(handle: str, foreign: str) -> Iterator[Case]:
    """Every HTTP-level request of the probe (`handle`: a live statement handle; `foreign`:
    one issued to the other API key)."""
    query, stmts = "/api/query", "/api/statements"
    for path in OPERATIONAL:
        yield Case(path, "GET", path + "?x=%00&y=" + "z" * 3000)
        yield Case(path, "GET", path, body=b"{" * 1000, headers={"Content-Length": "1000"})
        for method in METHODS:
            if method != "GET":
                yield Case(path, method, path)
        for headers in HEADER_SETS[10:14]:
            yield Case(path, "GET", path, headers=headers)
    for route, path in ((query, query), (stmts, stmts), ("/api/queries", "/api/queries")):
        for method in METHODS:
            yield Case(route, method, path, body=b"{}")
    for route, path in (
        ("/api/statements/{id}", f"/api/statements/{handle}"),
        ("/api/statements/{id}/rows", f"/api/statements/{handle}/rows"),
        ("/api/queries/{name}", "/api/queries/trips_by_zip"),
    ):
        for method in METHODS:
            yield Case(route, method, path)
    for route in (query, stmts):
        for body in BAD_JSON:
            yield Case(route, "POST", route, body, {"Content-Type": "application/json"})
        for value in WRONG_TYPES:
            yield Case(route, "POST", route, j(value), {"Content-Type": "application/json"})
        for encoding, data in ENCODINGS:
            headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
            yield Case(route, "POST", route, data, headers)
        for content_type in CONTENT_TYPES:
            yield Case(route, "POST", route, b'{"sql": "SELECT 1"}', {"Content-Type": content_type})
        for auth in AUTH_VARIANTS:
            yield Case(route, "POST", route, b'{"sql": "SELECT 1"}', auth, key=None)
        big = j({"sql": "SELECT 1", "pad": "x" * (MAX_BODY_BYTES + 10)})
        yield Case(route, "POST", route, big, {"Content-Type": "application/json"})
        for headers in HEADER_SETS:
            headers = {"Content-Type": "application/json", **headers}
            yield Case(route, "POST", route, b'{"sql": "SELECT 1"}', headers)
    for sql in HOSTILE_SQL:
        yield Case(query, "POST", query, j({"sql": sql}), {"Content-Type": "application/json"})
    for sql in HOSTILE_SQL[::3]:
        yield Case(stmts, "POST", stmts, j({"sql": sql}), {"Content-Type": "application/json"})
    for accept in ACCEPTS:
        for sql in (
            "SELECT 1 AS n",
            "SELECT 1/0",
            "SELECT 170141183460469231731687303715884105727",
        ):
            headers = {"Content-Type": "application/json", "Accept": accept}
            yield Case(query, "POST", query, j({"sql": sql}), headers)
    for name in NAMES:
        route = "/api/queries/{name}"
        yield Case(route, "POST", f"/api/queries/{name}", j({"params": {"zip": 10001}}))
    for body in NAMED_BODIES:
        for name in ("trips_by_zip", "fares_by_hour", "top_customers"):
            route = "/api/queries/{name}"
            headers = {"Content-Type": "application/json"}
            yield Case(route, "POST", f"/api/queries/{name}", body, headers)
    yield Case("/api/queries", "GET", "/api/queries?x=%0A")
    yield Case("/api/queries", "GET", "/api/queries", key=None)
    for bad in [*BAD_HANDLES, foreign]:
        for suffix, route in (("", "/api/statements/{id}"), ("/rows", "/api/statements/{id}/rows")):
            yield Case(route, "GET", f"/api/statements/{bad}{suffix}")
        yield Case("/api/statements/{id}", "DELETE", f"/api/statements/{bad}")
    tampered = handle[:-2] + ("AA" if not handle.endswith("AA") else "BB")
    yield Case("/api/statements/{id}", "GET", f"/api/statements/{tampered}")
    yield Case("/api/statements/{id}", "GET", f"/api/statements/{handle}", key=OTHER_KEY)
    yield Case("/api/statements/{id}", "GET", f"/api/statements/{handle}", key=None)
    for query_string in QUERY_STRINGS:
        yield Case(
            "/api/statements/{id}/rows", "GET", f"/api/statements/{handle}/rows{query_string}"
        )
        yield Case("/api/statements/{id}", "GET", f"/api/statements/{handle}{query_string}")
    for path in UNKNOWN_PATHS:
        yield Case("unknown", "GET", path)
        yield Case("unknown", "POST", path, b'{"sql": "SELECT 1"}')
    yield Case("/api/statements/{id}", "DELETE", f"/api/statements/{handle}")
    yield Case("/api/statements/{id}", "DELETE", f"/api/statements/{handle}")
    yield Case("/api/statements/{id}/rows", "GET", f"/api/statements/{handle}/rows")


POST_HEAD = (
    "POST /api/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    f"Authorization: Bearer {KEY}\r\n"
).encode()


def raw_cases() -> Iterator[RawCase]:
    """Requests aiohttp's parser must refuse, and bodies that come too slowly."""
    for data in (
        b"GARBAGE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"GET /health\r\n\r\n",
        b"GET /health HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nNo Colon Here\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x00b\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n X-Folded: yes\r\n\r\n",
        b"GET /he alth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-H: 1\r\n" * 200 + b"\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil\r\n\r\n",
        b"GET /health HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\nHost: 127.0.0.1\n\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: a\rb\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Latin: \xe9\xe8\r\n\r\n",
        b"GET /health%0AFORGED HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"G\x00T /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        POST_HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        POST_HEAD + b"Content-Length: -1\r\n\r\n",
        POST_HEAD + b"Content-Length: 1, 2\r\n\r\n",
        POST_HEAD + b"Content-Length: 99999999999999999999999\r\n\r\n",
        POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        POST_HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        POST_HEAD + b"Transfer-Encoding: gzip\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGARBAGE\r\n\r\n",
    ):
        yield RawCase("malformed", (data,))
    body = b'{"sql": "SELECT 1"}'
    slow = POST_HEAD + b"Content-Length: %d\r\n\r\n" % len(body)
    yield RawCase("/api/query", (slow + body[:5], body[5:]), pause_s=BODY_READ_TIMEOUT_S + 0.5)
    yield RawCase("/api/query", (slow, body[:3]), pause_s=0.05)
    chunked = POST_HEAD + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"sql\r\n'
    yield RawCase("/api/query", (chunked, b"zz\r\nbroken\r\n"), pause_s=0.1)


# -- sending and judging --------------------------------------------------------------------


def leaked(text: str) -> list[str]:
    return [
        name
        for name, secret in zip(("token", "key", "other key"), SECRETS, strict=True)
        if secret in text
    ]


def judge(findings: Findings, case: Case, status: int, headers: Any, body: bytes) -> None:
    what = f"{case.method} {case.path[:120]} -> {status}"
    findings.by_status[str(status)] += 1
    if status >= 500:
        findings.fail(f"5xx: {what}: {body[:300]!r}")
    shown = "\n".join(f"{k}: {v}" for k, v in headers.items()) + body.decode("utf-8", "replace")
    if leaks := leaked(shown):
        findings.fail(f"secret ({', '.join(leaks)}) in the response: {what}")
    if headers.get("Server") != "dbx-backend":
        findings.fail(f"Server header {headers.get('Server')!r}: {what}")
    if "X-Request-ID" not in headers:
        # aiohttp's HTTP layer answered before any route or middleware ran: HTTP it cannot
        # parse, or an Expect it does not know. Its plain-text 4xx is all HTTP allows here.
        findings.http_layer += 1
        if status < 400:
            findings.fail(f"answered without the service: {what}")
        return
    api = case.path.startswith("/api/") or case.route.startswith("/api/")
    if api and status >= 400 and case.method != "HEAD" and not is_envelope(headers, body):
        findings.fail(f"non-JSON error body: {what}: {body[:200]!r}")


def is_envelope(headers: Any, body: bytes) -> bool:
    if not headers.get("Content-Type", "").startswith("application/json"):
        return False
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return all(isinstance(error.get(k), str) for k in ("code", "message", "request_id"))


async def send(session: aiohttp.ClientSession, base: str, case: Case, findings: Findings) -> None:
    headers = dict(case.headers)
    if case.key is not None:
        headers.setdefault("Authorization", f"Bearer {case.key}")
    findings.sent += 1
    findings.routes.add(case.route)
    try:
        async with session.request(
            case.method,
            URL(base + case.path, encoded=True),
            data=case.body,
            headers=headers,
            skip_auto_headers=("Content-Type",),
            timeout=aiohttp.ClientTimeout(total=REQUEST_LIMIT_S),
        ) as response:
            body = await response.read()
            judge(findings, case, response.status, response.headers, body)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        # The client refused to send it, or the server closed without answering.
        findings.by_status[type(exc).__name__] += 1


async def send_raw(port: int, case: RawCase, findings: Findings) -> None:
    findings.sent += 1
    findings.routes.add(case.route)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index, part in enumerate(case.parts):
            if index and case.pause_s:
                await asyncio.sleep(case.pause_s)
            writer.write(part)
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(1 << 16), REQUEST_LIMIT_S)
    except (ConnectionError, TimeoutError) as exc:
        findings.by_status[type(exc).__name__] += 1
        return
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        # The server closed without a word: allowed for bytes that are not HTTP at all.
        findings.by_status["closed without answer"] += 1
        return
    status = int(lines[0].split(" ")[1])
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    as_case = Case(case.route, "RAW", case.route if case.route != "malformed" else "-")
    judge(findings, as_case, status, headers, body)


async def submit(session: aiohttp.ClientSession, base: str, key: str) -> str:
    async with session.post(
        f"{base}/api/statements",
        json={"sql": "SELECT * FROM range(2500) t(n)"},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        body = await response.json()
        if response.status != 202:
            raise RuntimeError(f"probe: could not submit a statement: {body}")
        return str(body["statement_id"])


async def probe(base: str, port: int, findings: Findings) -> None:
    async with aiohttp.ClientSession() as session:
        handle = await submit(session, base, KEY)
        foreign = await submit(session, base, OTHER_KEY)
        for case in cases(handle, foreign):
            await send(session, base, case, findings)
    for raw in raw_cases():
        await send_raw(port, raw, findings)


# -- the service's life ---------------------------------------------------------------------


def start_service(port: int, workdir: Path, log: Any) -> subprocess.Popen[bytes]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABRICKS_", "API_KEYS", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        {
            "API_KEYS": f"{KEY},{OTHER_KEY}",
            "QUERIES_DIR": str(ROOT / "queries"),
            "READ_ONLY": "true",
            "ALLOW_ADHOC_SQL": "true",
            "BODY_READ_TIMEOUT_S": str(BODY_READ_TIMEOUT_S),
            "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "LOG_LEVEL": "DEBUG",
            "STATEMENT_HANDLE_SECRET": secrets.token_hex(32),
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    command = [
        str(ROOT / ".venv" / "bin" / "dbx-backend"),
        "dev",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--token",
        TOKEN,
    ]
    # The working directory is empty, so no .env of the developer's is read.
    return subprocess.Popen(  # noqa: S603 - the project's own console script
        command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def wait_until_up(base: str, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if service.poll() is not None:
                raise RuntimeError("probe: the service exited during start")
            try:
                async with session.get(f"{base}/health", timeout=aiohttp.ClientTimeout(total=1)):
                    return
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)
    raise RuntimeError(f"probe: the service did not answer {base}/health in {START_LIMIT_S:g} s")


def stop_service(service: subprocess.Popen[bytes]) -> None:
    if service.poll() is None:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(timeout=5)


def judge_log(text: str, findings: Findings) -> int:
    """Fail on secrets, ERROR lines and stack traces in the service's output; count its lines."""
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if leaks := leaked(line):
            findings.fail(f"secret ({', '.join(leaks)}) in output line {number}")
        if " ERROR " in line or line.startswith("Traceback"):
            findings.fail(f"output line {number}: {line[:200]}")
    return len(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--verbose", action="store_true", help="print every failure in full")
    args = parser.parse_args()
    findings = Findings()
    started = time.monotonic()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="dbx-probe-") as work:
        log_path = Path(work) / "service.log"
        with log_path.open("wb") as log:
            service = start_service(port, Path(work), log)
            try:
                asyncio.run(asyncio.wait_for(run(base, port, service, findings), RUN_LIMIT_S))
            finally:
                stop_service(service)
        log_lines = judge_log(log_path.read_text(errors="replace"), findings)
    five_xx = sum(n for status, n in findings.by_status.items() if status.startswith("5"))
    print(
        json.dumps(
            {
                "requests": findings.sent,
                "routes_covered": len(findings.routes),
                "routes": sorted(findings.routes),
                "by_status": dict(sorted(findings.by_status.items())),
                "5xx": five_xx,
                "answered_by_http_layer": findings.http_layer,
                "failures": len(findings.failures),
                "log_lines": log_lines,
                "exit_code": service.returncode,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    missing = set(ROUTES) - findings.routes
    if missing:
        findings.fail(f"routes not probed: {sorted(missing)}")
    for failure in findings.failures if args.verbose else findings.failures[:30]:
        print(f"probe: {failure}", file=sys.stderr)
    return 1 if findings.failures else 0


async def run(base: str, port: int, service: subprocess.Popen[bytes], findings: Findings) -> None:
    await wait_until_up(base, service)
    await probe(base, port, findings)


if __name__ == "__main__":
    sys.exit(main())
