"""Transport to one workspace's Statement Execution API: auth, timeouts, retries, error mapping.

Only this module sends HTTP to the warehouse. Each call is bounded by its own timeout and by the
query's `Deadline`; retries follow `retry.py`'s policy, driven by `backoff`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import backoff
import orjson
from pydantic import ValidationError
from yarl import URL

from dbx_backend import __version__
from dbx_backend.config import Settings
from dbx_backend.redaction import redact
from dbx_backend.warehouse.auth import TokenProvider, token_provider_for
from dbx_backend.warehouse.errors import (
    BadRequest,
    ConnectFailed,
    LinkExpired,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    ResponseLost,
    ServerError,
    Unauthenticated,
    WarehouseError,
)
from dbx_backend.warehouse.retry import Deadline, RetryPolicy, delays, should_retry
from dbx_backend.warehouse.rows import place_rows, split_rows
from dbx_backend.warehouse.wire import (
    ErrorBody,
    ExternalLink,
    ResultData,
    StatementResponse,
    WarehouseInfo,
)

log = logging.getLogger(__name__)
_M = TypeVar("_M", StatementResponse, ResultData, WarehouseInfo)
_T = TypeVar("_T")

USER_AGENT = f"dbx-backend/{__version__}"
# A download is read whole: with a buffer as large as a typical chunk, aiohttp does not pause
# and resume the socket every 128 KiB while it reads (its 64 KiB default); at most this much
# more is buffered per download in flight.
DOWNLOAD_READ_BUFFER = 1 << 20
STATEMENTS_PATH = "/api/2.0/sql/statements"
WAREHOUSES_PATH = "/api/2.0/sql/warehouses"
# Reading or starting a warehouse is a small call: it gets a short budget of its own.
WAREHOUSE_CALL_TIMEOUT_S = 10.0
# A cancel is sent after the query's own deadline passed, so it gets a budget of its own.
CANCEL_TIMEOUT_S = 10.0
# Time beyond the submit's `wait_timeout` for the warehouse's answer to reach us.
SUBMIT_MARGIN_S = 10.0

# Most specific first: a connect timeout is a timeout, but the request never left us.
_TRANSPORT_ERRORS: tuple[tuple[type[BaseException], type[WarehouseError], str], ...] = (
    (aiohttp.ConnectionTimeoutError, ConnectFailed, "timed out connecting to the warehouse"),
    (aiohttp.ClientConnectorError, ConnectFailed, "could not connect to the warehouse"),
    (aiohttp.ServerTimeoutError, ResponseLost, "the warehouse did not answer in time"),
    (aiohttp.ClientError, ResponseLost, "the connection to the warehouse was lost"),
    (TimeoutError, ResponseLost, "the warehouse did not answer in time"),
)

_STATUS_ERRORS: dict[int, type[WarehouseError]] = {
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    429: RateLimited,
}
# A specific error_code overrides the status class (reference §8.2).
_CODE_ERRORS: dict[str, type[WarehouseError]] = {
    "REQUEST_LIMIT_EXCEEDED": RateLimited,
    "RESOURCE_EXHAUSTED": RateLimited,
}
_HTML_MESSAGE = re.compile(r"<pre>(.*?)</pre>|<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_CODE_COLON_MESSAGE = re.compile(r"^([A-Z][A-Z0-9_]+): (.+)$", re.DOTALL)
_RETRY_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")
_MAX_MESSAGE = 1000


@dataclass(slots=True)
class CallStats:
    """Counters for one query: each call made on its behalf adds to the `stats` it is given."""

    retries: int = 0
    warehouse_s: float = 0.0


class CallObserver(Protocol):
    """Receives one event per warehouse call, per retry and per finished statement (metrics)."""

    def call_finished(self, endpoint: str, outcome: str, seconds: float) -> None: ...

    def retried(self, endpoint: str) -> None: ...

    def statement_finished(self, state: str) -> None: ...


def _parse_retry_after(value: str | None) -> float | None:
    # Integer seconds, as the SDKs parse it (reference §8.4); an HTTP-date is ignored.
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _retry_after_from_details(details: list[dict[str, Any]]) -> float | None:
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _RETRY_DELAY.match(str(detail.get("retry_delay", "")))
            if match:
                return float(match[1])
    return None


def error_from_response(
    status: int,
    reason: str | None,
    body: bytes,
    retry_after_header: str | None = None,
    secrets: Iterable[str] = (),
) -> WarehouseError:
    """Turn a non-2xx answer into our exception: JSON, plain-text, HTML or empty bodies.

    The message is redacted of `secrets` (and token- or URL-shaped text): it will be logged.
    """
    text = body.decode("utf-8", errors="replace").strip()
    error_code: str | None = None
    message: str | None = None
    retry_after = _parse_retry_after(retry_after_header)
    try:
        parsed = ErrorBody.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        parsed = None
    if parsed is not None:
        error_code = str(parsed.error_code) if parsed.error_code is not None else None
        message = parsed.message or parsed.error
        if retry_after is None:
            retry_after = _retry_after_from_details(parsed.details)
    elif "<" in text and (html := _HTML_MESSAGE.search(text)):
        message = (html[1] or html[2] or "").strip()
    elif coded := _CODE_COLON_MESSAGE.match(text):
        error_code, message = coded[1], coded[2].strip()
    elif text:
        message = text
    message = redact(message or reason or f"HTTP {status}", secrets)[:_MAX_MESSAGE]
    cls = _CODE_ERRORS.get(error_code or "") or _STATUS_ERRORS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else BadRequest
    prefix = f"{error_code}: " if error_code else ""
    return cls(
        f"warehouse answered HTTP {status}: {prefix}{message}",
        status=status,
        error_code=error_code,
        retry_after=retry_after,
    )


def _transport_error(exc: BaseException) -> WarehouseError:
    for source, target, message in _TRANSPORT_ERRORS:
        if isinstance(exc, source):
            return target(message)
    return ResponseLost("the connection to the warehouse failed")


class WarehouseClient:
    """The Statement Execution API of one workspace, over one pooled `ClientSession`."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: RetryPolicy | None = None,
        auth: TokenProvider | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.warehouse_id = settings.warehouse_id
        self._host = settings.databricks_host
        self._auth_override = auth
        self._observer = observer
        self._session: aiohttp.ClientSession | None = None
        self._downloads: aiohttp.ClientSession | None = None
        self._auth: TokenProvider | None = None

    async def __aenter__(self) -> WarehouseClient:
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(
                total=self.settings.http_request_timeout_s,
                sock_connect=self.settings.http_connect_timeout_s,
            ),
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            raise_for_status=False,
        )
        # Presigned links carry their own credential: a separate session that never has ours.
        self._downloads = aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(
                total=self.settings.http_request_timeout_s,
                sock_connect=self.settings.http_connect_timeout_s,
            ),
            raise_for_status=False,
            read_bufsize=DOWNLOAD_READ_BUFFER,
        )
        self._auth = self._auth_override or token_provider_for(self.settings, self._session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for session in (self._session, self._downloads):
            if session is not None:
                await session.close()
        self._session = self._downloads = None

    def _secrets(self, authorization: str) -> list[str]:
        """Credentials that must never appear in an error message."""
        found = [authorization.partition(" ")[2]]
        for secret in (self.settings.databricks_token, self.settings.databricks_client_secret):
            if secret is not None:
                found.append(secret.get_secret_value())
        return found

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session; only valid inside `async with`."""
        if self._session is None:
            raise RuntimeError("WarehouseClient used outside `async with`")
        return self._session

    @property
    def observer(self) -> CallObserver | None:
        """Who hears about calls, retries and finished statements."""
        return self._observer

    @property
    def auth(self) -> TokenProvider:
        """The token provider in use."""
        if self._auth is None:
            raise RuntimeError("WarehouseClient used outside `async with`")
        return self._auth

    # -- the four operations ---------------------------------------------------------------

    async def submit(
        self,
        request: dict[str, Any],
        *,
        deadline: Deadline | None = None,
        wait_timeout: Callable[[], str] | None = None,
        stats: CallStats | None = None,
    ) -> StatementResponse:
        """POST a statement; retried only when the answer proves it did not run.

        `wait_timeout()` gives each attempt its `wait_timeout`, so a retry never asks the
        warehouse to wait past the deadline. The HTTP timeout covers that wait plus a margin and
        is not cut by the deadline: whoever gives up on the query needs the statement id that
        this answer carries, to cancel the statement.
        """
        url = URL(self._host + STATEMENTS_PATH)

        async def attempt() -> Any:
            body = {"warehouse_id": self.warehouse_id, **request}
            wait_s = 0
            if wait_timeout is not None:
                body["wait_timeout"] = wait_timeout()
                wait_s = int(float(str(body["wait_timeout"]).removesuffix("s")))
            timeout_s = max(self.settings.http_request_timeout_s, wait_s + SUBMIT_MARGIN_S)
            return await self._send("execute", "POST", url, body, None, timeout_s, stats)

        data = await self._retrying(
            "execute", attempt, idempotent=False, deadline=deadline, stats=stats
        )
        return self._parse(StatementResponse, data)

    async def get_statement(
        self,
        statement_id: str,
        *,
        deadline: Deadline | None = None,
        stats: CallStats | None = None,
    ) -> StatementResponse:
        """GET a statement's status (with manifest and first chunk once it succeeded)."""
        url = self._statement_url(statement_id)
        data = await self._call("get_statement", "GET", url, deadline=deadline, stats=stats)
        return self._parse(StatementResponse, data, statement_id)

    async def get_chunk(
        self,
        statement_id: str,
        chunk_index: int,
        *,
        deadline: Deadline | None = None,
        stats: CallStats | None = None,
    ) -> ResultData:
        """GET result chunk `chunk_index` by index (for parallel reads and link refresh)."""
        url = self._statement_url(statement_id, f"/result/chunks/{int(chunk_index)}")
        data = await self._call("get_chunk", "GET", url, deadline=deadline, stats=stats)
        return self._parse(ResultData, data, statement_id)

    async def follow_chunk_link(
        self,
        statement_id: str,
        link: str,
        *,
        deadline: Deadline | None = None,
        stats: CallStats | None = None,
    ) -> ResultData:
        """GET a `next_chunk_internal_link` verbatim, once proven a chunk of this statement."""
        prefix = f"{STATEMENTS_PATH}/{quote(statement_id, safe='')}/result/chunks/"
        if not link.startswith(prefix) or any(bad in link for bad in ("://", "..", "\\", "#")):
            raise ProtocolError(
                "the warehouse sent a chunk link outside this statement; refusing to follow it",
                statement_id=statement_id,
            )
        # encoded=True keeps the path and query string (`?row_offset=`) exactly as sent.
        url = URL(self._host + link, encoded=True)
        data = await self._call("get_chunk", "GET", url, deadline=deadline, stats=stats)
        return self._parse(ResultData, data, statement_id)

    async def cancel(self, statement_id: str) -> None:
        """Ask the warehouse to cancel; a 200 only acknowledges receipt (reference §4.3)."""
        await self._call(
            "cancel",
            "POST",
            self._statement_url(statement_id, "/cancel"),
            body={},
            timeout_s=CANCEL_TIMEOUT_S,
        )

    async def download(
        self,
        link: ExternalLink,
        *,
        deadline: Deadline | None = None,
        stats: CallStats | None = None,
    ) -> bytes:
        """GET one presigned chunk: no Authorization header, the link's own headers; retried.

        An expired link raises LinkExpired; the caller refreshes it through the chunk endpoint.
        """
        if self._downloads is None:
            raise RuntimeError("WarehouseClient used outside `async with`")
        session = self._downloads

        async def attempt() -> bytes:
            total = self.settings.http_request_timeout_s
            if deadline is not None:
                total = min(total, max(deadline.remaining(), 0.001))
            started, outcome = time.monotonic(), "error"
            try:
                async with session.get(
                    URL(link.external_link, encoded=True),
                    headers=link.http_headers,
                    timeout=aiohttp.ClientTimeout(
                        total=total, sock_connect=min(total, self.settings.http_connect_timeout_s)
                    ),
                ) as response:
                    payload = await response.read()
                    outcome = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _transport_error(exc) from exc
            finally:
                self._record("download", outcome, time.monotonic() - started, stats)
            if response.status == 403:
                # Cloud stores answer an expired presigned URL with 403 (reference §9).
                raise LinkExpired("a result link expired", status=403)
            if response.status >= 400:
                # The store's body may echo the URL or headers: keep none of it.
                raise error_from_response(response.status, response.reason, b"")
            return payload

        return await self._retrying(
            "download", attempt, idempotent=True, deadline=deadline, stats=stats
        )

    # -- the SQL Warehouses API (warehouses reference §1) ----------------------------------

    async def get_warehouse(self) -> WarehouseInfo:
        """GET the warehouse: its state (STOPPED, STARTING, RUNNING, ...) and health."""
        url = URL(f"{self._host}{WAREHOUSES_PATH}/{quote(self.warehouse_id, safe='')}")
        data = await self._call("warehouse_get", "GET", url, timeout_s=WAREHOUSE_CALL_TIMEOUT_S)
        return self._parse(WarehouseInfo, data)

    async def start_warehouse(self) -> None:
        """POST start: answered `{}` at once, the start goes on (poll `get_warehouse`).

        Not retried on an answer that may have reached the warehouse: the caller re-reads the
        state instead (the safe start rule, warehouses reference §1.2).
        """
        url = URL(f"{self._host}{WAREHOUSES_PATH}/{quote(self.warehouse_id, safe='')}/start")
        await self._call(
            "warehouse_start",
            "POST",
            url,
            body={},
            idempotent=False,
            timeout_s=WAREHOUSE_CALL_TIMEOUT_S,
        )

    # -- plumbing --------------------------------------------------------------------------

    def _statement_url(self, statement_id: str, suffix: str = "") -> URL:
        return URL(f"{self._host}{STATEMENTS_PATH}/{quote(statement_id, safe='')}{suffix}")

    @staticmethod
    def _parse(model: type[_M], data: Any, statement_id: str | None = None) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError:
            raise ProtocolError(
                f"the warehouse sent a malformed {model.__name__}", statement_id=statement_id
            ) from None

    async def _call(
        self,
        endpoint: str,
        method: str,
        url: URL,
        *,
        body: dict[str, Any] | None = None,
        idempotent: bool = True,
        deadline: Deadline | None = None,
        timeout_s: float | None = None,
        stats: CallStats | None = None,
    ) -> Any:
        """One logical API call: retried per policy within the deadline; returns parsed JSON."""

        async def attempt() -> Any:
            return await self._send(endpoint, method, url, body, deadline, timeout_s, stats)

        return await self._retrying(
            endpoint, attempt, idempotent=idempotent, deadline=deadline, stats=stats
        )

    async def _retrying(
        self,
        endpoint: str,
        attempt: Callable[[], Awaitable[_T]],
        *,
        idempotent: bool,
        deadline: Deadline | None,
        stats: CallStats | None = None,
    ) -> _T:
        """Run `attempt` under the retry policy, bounded by attempts, total time and deadline."""
        policy = self.policy

        def max_time() -> float:
            return policy.total_s if deadline is None else min(policy.total_s, deadline.remaining())

        def on_backoff(details: Any) -> None:
            if stats is not None:
                stats.retries += 1
            if self._observer is not None:
                self._observer.retried(endpoint)

        retrying: Callable[[], Awaitable[_T]] = backoff.on_exception(
            delays,
            WarehouseError,
            max_tries=policy.attempts,
            max_time=max_time,
            giveup=lambda exc: not should_retry(exc, idempotent=idempotent),
            jitter=None,  # the policy jitters itself, so Retry-After is honoured as given
            on_backoff=on_backoff,
            logger=log,
            backoff_log_level=logging.WARNING,
            giveup_log_level=logging.DEBUG,  # the caller sees (and logs) the final error once
            policy=policy,
        )(attempt)
        return await retrying()

    async def _send(
        self,
        endpoint: str,
        method: str,
        url: URL,
        body: dict[str, Any] | None,
        deadline: Deadline | None,
        timeout_s: float | None,
        stats: CallStats | None = None,
    ) -> Any:
        total = timeout_s or self.settings.http_request_timeout_s
        if deadline is not None:
            total = min(total, max(deadline.remaining(), 0.001))
        timeout = aiohttp.ClientTimeout(
            total=total, sock_connect=min(total, self.settings.http_connect_timeout_s)
        )
        started = time.monotonic()
        outcome = "error"
        try:
            authorization = await self.auth.authorization()
            for auth_attempt in range(2):
                status, reason, payload, retry_after, final_url = await self._exchange(
                    method, url, body, authorization, timeout
                )
                if status == 401 and auth_attempt == 0:
                    # An OAuth token may have been revoked or rotated: refresh once, retry once.
                    fresh = await self.auth.refresh(authorization)
                    if fresh != authorization:
                        authorization = fresh
                        continue
                break
            outcome = str(status)
            if "private-link-validation-error" in final_url.query_string:
                raise PermissionDenied("the workspace refused this network (Private Link)")
            if status >= 400:
                raise error_from_response(
                    status, reason, payload, retry_after, self._secrets(authorization)
                )
            return self._json(payload)
        finally:
            self._record(endpoint, outcome, time.monotonic() - started, stats)

    def _record(self, endpoint: str, outcome: str, seconds: float, stats: CallStats | None) -> None:
        if stats is not None:
            stats.warehouse_s += seconds
        if self._observer is not None:
            self._observer.call_finished(endpoint, outcome, seconds)

    async def _exchange(
        self,
        method: str,
        url: URL,
        body: dict[str, Any] | None,
        authorization: str,
        client_timeout: aiohttp.ClientTimeout,
    ) -> tuple[int, str | None, bytes, str | None, URL]:
        try:
            async with self.session.request(
                method,
                url,
                json=body,
                headers={"Authorization": authorization},
                timeout=client_timeout,
            ) as response:
                payload = await response.read()
                return (
                    response.status,
                    response.reason,
                    payload,
                    response.headers.get("Retry-After"),
                    response.url,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc) from exc

    @staticmethod
    def _json(payload: bytes) -> Any:
        """The body, parsed; a chunk's rows (`data_array`) stay text until they are read, a
        slice at a time (`RowArray`): parsed at once they would weigh five times the text."""
        if not payload.strip():
            return {}
        split = split_rows(payload)
        if split is not None:
            envelope, rows = split
            try:
                data = orjson.loads(envelope)
            except orjson.JSONDecodeError:
                data = None  # not told apart from the rest: parsed whole below
            if place_rows(data, rows):
                return data
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise ProtocolError("the warehouse sent a body that is not JSON") from None
