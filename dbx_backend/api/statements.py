"""The asynchronous statements API: submit a long query, poll it, page through it, cancel it.

    POST   /api/statements                  202 {"statement_id": <handle>, "state"}
    GET    /api/statements/{id}?limit=      200 {"statement_id", "state", ...} in every state
    GET    /api/statements/{id}/rows?offset=&limit=   one page of rows; 409 until SUCCEEDED
    DELETE /api/statements/{id}             202: the cancel was sent

`{id}` is a signed handle (`engine/handles.py`), never the raw warehouse id. A poll answers 200
for any valid handle: PENDING and RUNNING with `elapsed_ms`, SUCCEEDED with the result's first
page, FAILED with its `error`, so a 4xx always means the poll itself was wrong. Pages hold at
most `MAX_PAGE_ROWS` rows; a larger `limit` is a 400 naming the cap. A submit waits up to its
`wait_s` for the statement to end. An `Idempotency-Key` on POST returns
the first submit's handle for `IDEMPOTENCY_WINDOW_S`, from this process's memory and, with
`CACHE_URL`, from Redis, so a retry that lands on another replica gets the same handle
(`engine/idempotency.py`). Each caller may have `MAX_OPEN_STATEMENTS` statements open at once
(`engine/open_statements.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

from dbx_backend.api.answers import column_models, model_response
from dbx_backend.api.cached import memory_noted, note_memory_wait, send_reserved
from dbx_backend.api.errors import (
    INTERNAL,
    InvalidRequest,
    StatementNotReady,
    error_body,
    response_for,
)
from dbx_backend.api.guards import caller_identity
from dbx_backend.api.models import (
    MAX_SAFE_INT,
    CancelSent,
    ErrorDetail,
    StatementEnded,
    StatementRunning,
    StatementSubmitted,
    StatementSucceeded,
    SubmitRequest,
)
from dbx_backend.api.models import RowsPage as RowsPageModel
from dbx_backend.api.models import StatementFailed as StatementFailedModel
from dbx_backend.api.options import query_options
from dbx_backend.api.routes import query_params, read_json
from dbx_backend.config import Settings
from dbx_backend.engine import (
    IDEMPOTENCY_HEADER,
    HandleClaims,
    HandleSigner,
    IdempotencyStore,
    NormalizeOptions,
    OpenStatements,
    StatementInfo,
    Submitted,
    UnknownHandle,
    released_on_error,
    still_running,
)
from dbx_backend.keys import (
    HANDLE_SIGNER,
    IDEMPOTENCY,
    LIMITER,
    OPEN_STATEMENTS,
    QUERY_SERVICE,
    REQUEST_ID,
    ROW_COUNT,
    SECRETS,
    SETTINGS,
    STATEMENT_ID,
    TASKS,
)
from dbx_backend.warehouse import errors as dbx

MAX_PAGE_ROWS = 10_000
DEFAULT_PAGE_ROWS = 1_000
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, as in the IETF draft


def caller_of(request: web.Request) -> str:
    """Who is asking: a digest of the API key when keys are required, else everyone is one."""
    return caller_identity(request.app[SETTINGS], request.headers.get("Authorization", ""))


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
        _release(request, claims)
        raise UnknownHandle from None
    except (dbx.StatementFailed, dbx.StatementClosed):
        _release(request, claims)
        raise


def _observe(request: web.Request, claims: HandleClaims, state: str) -> None:
    """Tell the open-statements budget the state a poll learned."""
    request.app[OPEN_STATEMENTS].observe(caller_of(request), claims.statement_id, state)


def _release(request: web.Request, claims: HandleClaims) -> None:
    """The statement ended or is gone: its caller's open-statement slot is free again."""
    request.app[OPEN_STATEMENTS].release(caller_of(request), claims.statement_id)


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
    """Start one ad-hoc statement and answer 202 with its handle, once it has ended or `wait_s`
    has passed (0: at once)."""
    body = await read_json(request, SubmitRequest)
    engine = request.app[QUERY_SERVICE]
    statement = await engine.admit(body.sql)
    key = _idempotency_key(request)
    caller = caller_of(request)
    options = query_options(
        request, body, streaming=True, catalog=body.catalog, schema=body.schema_
    )
    limiter = request.app[LIMITER]
    budget = request.app[OPEN_STATEMENTS]
    wait_ends_at = engine.clock() + min(body.wait_s, options.timeout_s)

    def wait_left() -> float:
        return max(0.0, wait_ends_at - engine.clock())

    async def submit() -> Submitted:
        # A caller that leaves mid-submit (no Idempotency-Key: nobody else can learn the handle)
        # cancels this; the engine then cancels the statement once the warehouse names it.
        with budget.reserve(caller) as keep:  # over the budget: refused before any submit
            async with limiter.slot():
                info = await engine.start(
                    statement, query_params(body), options, wait_s=wait_left()
                )
            if not info.finished:
                keep(info.statement_id)
        handle = request.app[HANDLE_SIGNER].issue(
            info.statement_id, caller=caller, long_as_string=body.long_as_string
        )
        return Submitted(handle, info.state, info.statement_id)

    if key is None:
        submitted = await submit()
    else:
        # How long this request waits is not part of the statement: a retry may wait less.
        statement_json = body.model_dump_json(by_alias=True, exclude={"wait_s"})
        fingerprint = hashlib.sha256(statement_json.encode()).hexdigest()
        submitted = await request.app[IDEMPOTENCY].submit_once((caller, key), fingerprint, submit)
    request[STATEMENT_ID] = submitted.statement_id
    state = await _wait_until_end(request, submitted, wait_left(), abandon=key is None)
    return model_response(StatementSubmitted(statement_id=submitted.handle, state=state), 202)


async def _wait_until_end(
    request: web.Request, submitted: Submitted, wait_s: float, *, abandon: bool
) -> str:
    """The statement's state once it ends or `wait_s` runs out, polled after the submit (so a
    caller who leaves stops only the wait; without an Idempotency-Key nobody else can learn
    the handle, so the statement is cancelled then)."""
    if still_running(submitted) is None or wait_s <= 0:
        return submitted.state
    engine, budget = request.app[QUERY_SERVICE], request.app[OPEN_STATEMENTS]
    caller = caller_of(request)
    info = StatementInfo(submitted.statement_id, submitted.state)
    try:
        info = await engine.wait_until_end(info, wait_s)
    except asyncio.CancelledError:
        if abandon:
            budget.release(caller, submitted.statement_id)
            request.app[TASKS].spawn(engine.cancel_quietly(submitted.statement_id))
        raise
    except dbx.StatementFailed:
        budget.release(caller, submitted.statement_id)
        raise
    budget.observe(caller, submitted.statement_id, info.state)
    return info.state


async def statement_status(request: web.Request) -> web.StreamResponse:
    """The statement's state, 200 whatever it is: with `elapsed_ms` while it runs, the result's
    columns, totals and first `limit` rows once SUCCEEDED, the `error` once FAILED."""
    handle, claims = _open_handle(request)
    limit = _int_param(request, "limit", DEFAULT_PAGE_ROWS, 0, MAX_PAGE_ROWS)
    normalize = NormalizeOptions(long_as_string=claims.long_as_string)
    with _statement_scope(request, claims), memory_noted(request):
        async with request.app[LIMITER].slot():
            info = await request.app[QUERY_SERVICE].status(
                claims.statement_id, first_page_rows=limit, normalize=normalize
            )
    _observe(request, claims, info.state)
    if info.reservation is not None:
        note_memory_wait(request, info.reservation.waited_s)
    if not info.finished:  # PENDING or RUNNING
        elapsed_s = request.app[HANDLE_SIGNER].clock() - claims.submitted_at
        running = StatementRunning(
            statement_id=handle, state=info.state, elapsed_ms=max(0, round(elapsed_s * 1000))
        )
        return model_response(running)
    if info.failure is not None:
        row = response_for(info.failure) or INTERNAL
        secrets: tuple[str, ...] = request.app[SECRETS]
        read_only = request.app[SETTINGS].read_only
        failure = error_body(info.failure, row, request[REQUEST_ID], secrets, read_only=read_only)
        error = ErrorDetail.model_validate(failure["error"])
        return model_response(
            StatementFailedModel(statement_id=handle, state="FAILED", error=error)
        )
    if info.columns is None:  # CANCELED, or CLOSED
        return model_response(StatementEnded(statement_id=handle, state=info.state))
    rows = info.rows or []
    total = info.total_row_count or 0
    request[ROW_COUNT] = len(rows)
    status = StatementSucceeded(
        statement_id=handle,
        state="SUCCEEDED",
        columns=column_models(info.columns),
        row_count=total,
        truncated=info.truncated,
        rows=[],
        next_offset=len(rows) if len(rows) < total else None,
    )
    with released_on_error(info.reservation):
        response = model_response(status, rows=rows)
    return await send_reserved(request, response, info.reservation)


async def statement_rows(request: web.Request) -> web.StreamResponse:
    """Rows `[offset, offset + limit)` of a SUCCEEDED statement's result; 409 before that."""
    _, claims = _open_handle(request)
    offset = _int_param(request, "offset", 0, 0)
    limit = _int_param(request, "limit", DEFAULT_PAGE_ROWS, 1, MAX_PAGE_ROWS)
    normalize = NormalizeOptions(long_as_string=claims.long_as_string)
    with _statement_scope(request, claims), memory_noted(request):
        async with request.app[LIMITER].slot():
            page = await request.app[QUERY_SERVICE].rows(
                claims.statement_id, offset, limit, normalize
            )
    _observe(request, claims, page.state)
    if page.reservation is not None:
        note_memory_wait(request, page.reservation.waited_s)
    if not page.succeeded:
        raise StatementNotReady(page.state)
    end = page.offset + len(page.rows)
    request[ROW_COUNT] = len(page.rows)
    answer = RowsPageModel(
        rows=[],
        offset=page.offset,
        row_count=len(page.rows),
        total_row_count=page.total_row_count,
        next_offset=end if end < page.total_row_count else None,
    )
    with released_on_error(page.reservation):
        response = model_response(answer, rows=page.rows)
    return await send_reserved(request, response, page.reservation)


async def cancel_statement(request: web.Request) -> web.Response:
    """Send a cancel; the statement may still finish first, so poll to learn the outcome."""
    handle, claims = _open_handle(request)
    with _statement_scope(request, claims):
        await request.app[QUERY_SERVICE].cancel(claims.statement_id)
    # It may still finish first; either way the caller is done with it.
    _release(request, claims)
    return model_response(CancelSent(statement_id=handle), 202)


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
    app[IDEMPOTENCY] = IdempotencyStore(window_s, clock=monotonic, tasks=app[TASKS])
    app[OPEN_STATEMENTS] = OpenStatements(
        settings.max_open_statements, max_age_s=settings.statement_handle_ttl_s, clock=monotonic
    )

    async def abandon_submits(app: web.Application) -> None:
        # The process is stopping: nobody will learn the handle of a submit still in flight
        # (an Idempotency-Key retry included), so each such statement gets its one cancel.
        for task in app[IDEMPOTENCY].running():
            app[QUERY_SERVICE].cancel_when_started(task, still_running)

    async def state_of(statement_id: str) -> str | None:
        timeout_s = app[OPEN_STATEMENTS].policy.lookup_timeout_s
        return await app[QUERY_SERVICE].state_of(statement_id, timeout_s=timeout_s)

    async def open_statements_ctx(app: web.Application) -> AsyncIterator[None]:
        checks = app[TASKS].spawn(app[OPEN_STATEMENTS].run_checks(state_of))
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
