"""The asynchronous statements API: submit a long query, poll it, page through it, cancel it.

    POST   /api/statements                  202 {"statement_id": <handle>, "state"}
    GET    /api/statements/{id}?limit=      200 {"statement_id", "state", ...} in every state
    GET    /api/statements/{id}/rows?offset=&limit=   one page of rows; 409 until SUCCEEDED
    DELETE /api/statements/{id}             202: the cancel was sent

`{id}` is a signed handle (`handles.py`), never the raw warehouse id. A poll answers 200 for any
valid handle: PENDING and RUNNING with `elapsed_ms`, SUCCEEDED with the result's first page,
FAILED with its `error`, so a 4xx always means the poll itself was wrong. Pages hold at most
`MAX_PAGE_ROWS` rows; a larger `limit` is a 400 naming the cap. An `Idempotency-Key` on POST returns
the first submit's handle for `IDEMPOTENCY_WINDOW_S`; that memory is this process's only (LRU,
`IDEMPOTENCY_MAX_KEYS` keys), so across replicas a retry that lands elsewhere submits again
unless the load balancer is sticky on the header. Each caller may have `MAX_OPEN_STATEMENTS`
statements open at once (`open_statements.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dbx_backend.api.errors import (
    INTERNAL,
    InvalidRequest,
    NotFoundError,
    StatementNotReady,
    error_body,
    json_response,
    response_for,
)
from dbx_backend.api.guards import TooManyQueries, check_sql
from dbx_backend.api.handles import UNKNOWN_HANDLE, HandleClaims, HandleSigner
from dbx_backend.api.models import MAX_SAFE_INT, SubmitRequest
from dbx_backend.api.open_statements import OpenStatements, TooManyStatements
from dbx_backend.api.routes import query_options, query_params, read_json
from dbx_backend.config import Settings
from dbx_backend.engine.normalize import NormalizeOptions
from dbx_backend.engine.statements import StatementInfo, StatementOperations
from dbx_backend.keys import (
    LIMITER,
    QUERY_SERVICE,
    REQUEST_ID,
    ROW_COUNT,
    SECRETS,
    SETTINGS,
    STATEMENT_ID,
    WAREHOUSE,
)
from dbx_backend.warehouse import errors as dbx
from dbx_backend.warehouse.retry import Deadline, never_ran
from dbx_backend.warehouse.wire import State

log = logging.getLogger("dbx_backend.api")

MAX_PAGE_ROWS = 10_000
DEFAULT_PAGE_ROWS = 1_000
IDEMPOTENCY_MAX_KEYS = 10_000
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, as in the IETF draft


@dataclass(frozen=True, slots=True)
class Submitted:
    """What a submit answered: replayed as is for a repeated Idempotency-Key."""

    handle: str
    state: str
    statement_id: str


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    created: float
    task: asyncio.Task[Submitted]


class IdempotencyStore:
    """Submits keyed by (caller, Idempotency-Key), kept `window_s` in an LRU of `max_keys`.

    Submits run in tasks owned by the store, so a caller that leaves does not stop one that a
    retry will ask for; a concurrent duplicate awaits the same task. A submit that failed
    before anything could run (429, 503, no connection, our own limit) is forgotten, so a retry
    may try again; any other failure is replayed, since the statement may have run.
    """

    def __init__(
        self,
        window_s: float,
        *,
        max_keys: int = IDEMPOTENCY_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `work` in a task the store owns until it ends."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def submit_once(
        self,
        key: tuple[str, str],
        fingerprint: str,
        submit: Callable[[], Awaitable[Submitted]],
    ) -> Submitted:
        """The answer of the first `submit` under `key`; a different body under it is refused."""
        now = self.clock()
        self._forget_expired(now)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise InvalidRequest(
                    "this Idempotency-Key was already used with a different request; "
                    "use a new key for a new statement",
                    field=IDEMPOTENCY_HEADER,
                )
            self._entries.move_to_end(key)
            return await asyncio.shield(entry.task)
        task: asyncio.Task[Submitted] = self.spawn(submit())
        self._entries[key] = _Entry(fingerprint, now, task)
        task.add_done_callback(lambda done: self._settle(key, done))
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
        return await asyncio.shield(task)

    def running(self) -> list[asyncio.Task[Any]]:
        """Submits still waiting for the warehouse's answer: no caller holds their handle."""
        return [task for task in self._tasks if not task.done()]

    def _settle(self, key: tuple[str, str], task: asyncio.Task[Submitted]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.task is task and _nothing_ran(task):
            del self._entries[key]

    def _forget_expired(self, now: float) -> None:
        expired = [k for k, e in self._entries.items() if now - e.created >= self.window_s]
        for key in expired:
            del self._entries[key]


def _nothing_ran(task: asyncio.Task[Submitted]) -> bool:
    """True when the submit failed in a way that proves no statement was started."""
    if task.cancelled():
        return True
    exc = task.exception()  # also marks it retrieved
    if exc is None:
        return False
    # Refused by us, or an answer that proves it never ran (4xx, 429, 503, no connection).
    return isinstance(exc, (TooManyQueries, TooManyStatements)) or never_ran(exc)


HANDLE_SIGNER = web.AppKey("statement_handle_signer", HandleSigner)
IDEMPOTENCY = web.AppKey("statement_idempotency", IdempotencyStore)
OPEN_STATEMENTS = web.AppKey("open_statements", OpenStatements)


def caller_of(request: web.Request) -> str:
    """Who is asking: a digest of the API key when keys are required, else everyone is one."""
    settings = request.app[SETTINGS]
    if not (settings.api_keys or settings.api_keys_file):
        return ""
    _, _, presented = request.headers.get("Authorization", "").partition(" ")
    return hashlib.sha256(presented.strip().encode()).hexdigest()


def _operations(request: web.Request) -> StatementOperations:
    settings = request.app[SETTINGS]
    service = request.app[QUERY_SERVICE]
    return StatementOperations(
        request.app[WAREHOUSE],
        call_timeout_s=settings.query_timeout_s,
        schedule=service.schedule,
        sleep=service.sleep,
        abandon=service.cancel_when_submitted,
    )


def _open_handle(request: web.Request) -> tuple[str, HandleClaims]:
    handle = request.match_info["id"]
    claims = request.app[HANDLE_SIGNER].open(handle, caller=caller_of(request))
    request[STATEMENT_ID] = claims.statement_id
    return handle, claims


@contextmanager
def _statement_scope(request: web.Request, claims: HandleClaims) -> Iterator[None]:
    """A statement the warehouse no longer knows (purged after 12 h, §4.1) is a 404 here.
    One that ended or is gone gives its caller's open-statement slot back."""
    try:
        yield
    except dbx.NotFound:
        _observe(request, claims, None)
        raise NotFoundError(UNKNOWN_HANDLE, field="statement_id") from None
    except (dbx.StatementFailed, dbx.StatementClosed):
        _observe(request, claims, State.FAILED)
        raise


def _observe(request: web.Request, claims: HandleClaims, state: str | None) -> None:
    """Tell the open-statements budget what was learned (None: the warehouse forgot it)."""
    request.app[OPEN_STATEMENTS].observe(caller_of(request), claims.statement_id, state)


def _int_param(
    request: web.Request, name: str, default: int, minimum: int, maximum: int = MAX_SAFE_INT
) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    # ASCII digits only (`\d` would take any script's); the bounds are named in the answer.
    if not re.fullmatch(r"[0-9]{1,16}", text.strip()) or not minimum <= int(text) <= maximum:
        raise InvalidRequest(f"{name} must be an integer from {minimum} to {maximum}", field=name)
    return int(text)


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest(
            f"{IDEMPOTENCY_HEADER} must be 1 to 255 printable ASCII characters",
            field=IDEMPOTENCY_HEADER,
        )
    return key


async def submit_statement(request: web.Request) -> web.Response:
    """Start one ad-hoc statement and answer 202 with its handle, without waiting for rows."""
    settings = request.app[SETTINGS]
    body = await read_json(request, SubmitRequest)
    await check_sql(settings, body.sql, adhoc=True)
    key = _idempotency_key(request)
    caller = caller_of(request)
    options = query_options(
        request, body, streaming=True, catalog=body.catalog, schema=body.schema_
    )
    operations = _operations(request)
    limiter = request.app[LIMITER]
    budget = request.app[OPEN_STATEMENTS]
    waiting = Deadline(min(body.wait_s, options.timeout_s), operations.clock)

    async def submit() -> Submitted:
        with budget.reserve(caller) as keep:  # over the budget: refused before any submit
            async with limiter.slot():
                info = await operations.submit(
                    body.sql, query_params(body), options, wait_s=waiting.remaining()
                )
            if info.state not in State.TERMINAL:
                keep(info.statement_id)
        handle = request.app[HANDLE_SIGNER].issue(
            info.statement_id, caller=caller, long_as_string=body.long_as_string
        )
        return Submitted(handle, info.state, info.statement_id)

    store = request.app[IDEMPOTENCY]
    if key is not None:
        # How long this request waits is not part of the statement: a retry may wait less.
        statement = body.model_dump_json(by_alias=True, exclude={"wait_s"})
        fingerprint = hashlib.sha256(statement.encode()).hexdigest()
        submitted = await store.submit_once((caller, key), fingerprint, submit)
    else:
        task: asyncio.Task[Submitted] = store.spawn(submit())
        try:
            submitted = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The caller left mid-submit and cannot learn the handle: stop what it started;
            # its place in the caller's budget is free again.
            def abandoned(submitted: Submitted) -> str | None:
                budget.release(caller, submitted.statement_id)
                return _still_running(submitted)

            request.app[QUERY_SERVICE].cancel_when_started(task, abandoned)
            raise
    request[STATEMENT_ID] = submitted.statement_id
    state = await _wait_until_end(request, submitted, waiting, abandon=key is None)
    return json_response({"statement_id": submitted.handle, "state": state}, 202)


async def _wait_until_end(
    request: web.Request, submitted: Submitted, waiting: Deadline, *, abandon: bool
) -> str:
    """The statement's state once it ends or `wait_s` runs out (outside the submit's task, so
    a caller who leaves stops only the wait; without an Idempotency-Key nobody else can learn
    the handle, so the statement is cancelled then)."""
    if submitted.state in State.TERMINAL or waiting.remaining() <= 0:
        return submitted.state
    budget, caller = request.app[OPEN_STATEMENTS], caller_of(request)
    info = StatementInfo(submitted.statement_id, submitted.state)
    try:
        info = await _operations(request).wait_until_end(info, waiting)
    except asyncio.CancelledError:
        if abandon:
            budget.release(caller, submitted.statement_id)
            request.app[QUERY_SERVICE].cancel_in_background(submitted.statement_id)
        raise
    except dbx.StatementFailed:
        budget.observe(caller, submitted.statement_id, State.FAILED)
        raise
    budget.observe(caller, submitted.statement_id, info.state)
    return info.state


def _still_running(submitted: Submitted) -> str | None:
    return None if submitted.state in State.TERMINAL else submitted.statement_id


async def statement_status(request: web.Request) -> web.Response:
    """The statement's state, 200 whatever it is: with `elapsed_ms` while it runs, the result's
    columns, totals and first `limit` rows once SUCCEEDED, the `error` once FAILED."""
    handle, claims = _open_handle(request)
    limit = _int_param(request, "limit", DEFAULT_PAGE_ROWS, 0, MAX_PAGE_ROWS)
    normalize = NormalizeOptions(long_as_string=claims.long_as_string)
    with _statement_scope(request, claims):
        async with request.app[LIMITER].slot():
            info = await _operations(request).status(
                claims.statement_id, first_page_rows=limit, normalize=normalize
            )
    _observe(request, claims, info.state)
    payload: dict[str, Any] = {"statement_id": handle, "state": info.state}
    if info.state in (State.PENDING, State.RUNNING):
        elapsed_s = request.app[HANDLE_SIGNER].clock() - claims.submitted_at
        payload["elapsed_ms"] = max(0, round(elapsed_s * 1000))
    if info.failure is not None:
        failure = info.failure
        row = response_for(failure) or INTERNAL
        read_only = request.app[SETTINGS].read_only
        secrets: tuple[str, ...] = request.app[SECRETS]
        body = error_body(failure, row, request[REQUEST_ID], secrets, read_only=read_only)
        payload["error"] = body["error"]
    if info.columns is not None:
        rows = info.rows or []
        total = info.total_row_count or 0
        request[ROW_COUNT] = len(rows)
        payload |= {
            "columns": [c.to_json() for c in info.columns],
            "row_count": total,
            "truncated": info.truncated,
            "rows": rows,
            "next_offset": len(rows) if len(rows) < total else None,
        }
    return json_response(payload)


async def statement_rows(request: web.Request) -> web.Response:
    """Rows `[offset, offset + limit)` of a SUCCEEDED statement's result; 409 before that."""
    _, claims = _open_handle(request)
    offset = _int_param(request, "offset", 0, 0)
    limit = _int_param(request, "limit", DEFAULT_PAGE_ROWS, 1, MAX_PAGE_ROWS)
    normalize = NormalizeOptions(long_as_string=claims.long_as_string)
    with _statement_scope(request, claims):
        async with request.app[LIMITER].slot():
            page = await _operations(request).rows(claims.statement_id, offset, limit, normalize)
    _observe(request, claims, page.state)
    if page.state != State.SUCCEEDED:
        raise StatementNotReady(page.state)
    end = page.offset + len(page.rows)
    request[ROW_COUNT] = len(page.rows)
    return json_response(
        {
            "rows": page.rows,
            "offset": page.offset,
            "row_count": len(page.rows),
            "total_row_count": page.total_row_count,
            "next_offset": end if end < page.total_row_count else None,
        }
    )


async def cancel_statement(request: web.Request) -> web.Response:
    """Send a cancel; the statement may still finish first, so poll to learn the outcome."""
    handle, claims = _open_handle(request)
    with _statement_scope(request, claims):
        await _operations(request).cancel(claims.statement_id)
    # It may still finish first; either way the caller is done with it.
    request.app[OPEN_STATEMENTS].release(caller_of(request), claims.statement_id)
    return json_response({"statement_id": handle}, 202)


def setup_statement_routes(
    app: web.Application,
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Register the statements routes, their handle signer, idempotency store and
    open-statements budget (with its background check).

    At shutdown (before clean-up) submits still in flight are handed to the query service,
    which cancels their statements once the warehouse names them.
    """
    app[HANDLE_SIGNER] = HandleSigner.from_settings(settings, clock)
    # A remembered handle must not outlive its own expiry.
    window_s = min(settings.idempotency_window_s, settings.statement_handle_ttl_s)
    app[IDEMPOTENCY] = IdempotencyStore(window_s, clock=monotonic)
    app[OPEN_STATEMENTS] = OpenStatements(
        settings.max_open_statements, max_age_s=settings.statement_handle_ttl_s, clock=monotonic
    )

    async def abandon_submits(app: web.Application) -> None:
        # The process is stopping: nobody will learn the handle of a submit still in flight
        # (an Idempotency-Key retry included), so each such statement gets its one cancel.
        for task in app[IDEMPOTENCY].running():
            app[QUERY_SERVICE].cancel_when_started(task, _still_running)

    async def state_of(statement_id: str) -> str | None:
        timeout_s = app[OPEN_STATEMENTS].policy.lookup_timeout_s
        try:
            response = await app[WAREHOUSE].get_statement(
                statement_id, deadline=Deadline(timeout_s, monotonic)
            )
        except dbx.NotFound:
            return None
        return response.status.state

    async def open_statements_ctx(app: web.Application) -> AsyncIterator[None]:
        checks = asyncio.get_running_loop().create_task(app[OPEN_STATEMENTS].run_checks(state_of))
        yield
        checks.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checks

    app.on_shutdown.append(abandon_submits)
    app.cleanup_ctx.append(open_statements_ctx)
    app.router.add_post("/api/statements", submit_statement, name="submit_statement")
    app.router.add_get("/api/statements/{id}", statement_status, name="statement_status")
    app.router.add_get("/api/statements/{id}/rows", statement_rows, name="statement_rows")
    app.router.add_delete("/api/statements/{id}", cancel_statement, name="cancel_statement")
