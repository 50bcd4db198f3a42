"""Statements executed on DuckDB off the event loop, with the real state machine.

PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELED; SUCCEEDED -> CLOSED when the result
expires (or, in the strict reading, when its last INLINE chunk was read); any terminal state is
purged later (reference §6). Each statement runs in a worker thread on its own DuckDB cursor,
so cancel can interrupt exactly that query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb

from dbx_backend.localwarehouse import results
from dbx_backend.localwarehouse.coltypes import (
    column_info,
    narrowed_expression,
    needs_narrowing,
    string_expression,
)
from dbx_backend.localwarehouse.config import WarehouseConfig
from dbx_backend.localwarehouse.dialect import translate
from dbx_backend.localwarehouse.errors import (
    SqlError,
    StatementCanceled,
    not_found,
    sql_error_from_duckdb,
)
from dbx_backend.localwarehouse.request import INT64_MAX, ExecuteRequest
from dbx_backend.localwarehouse.samples import attach_data_dir, seed_samples

log = logging.getLogger(__name__)

PENDING, RUNNING, SUCCEEDED = "PENDING", "RUNNING", "SUCCEEDED"
FAILED, CANCELED, CLOSED = "FAILED", "CANCELED", "CLOSED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED, CLOSED})
EXTERNAL_BYTE_LIMIT = 100 * 1024**3  # default byte_limit for EXTERNAL_LINKS (reference §3.1)
DEFAULT_CATALOG = "memory"
INTERRUPT_EVERY_S = 0.02
INTERRUPT_FOR_S = 10.0


class Statement:
    """One submitted statement: its request, state, error and result."""

    def __init__(self, statement_id: str, request: ExecuteRequest, submitted_at: float) -> None:
        self.statement_id = statement_id
        self.request = request
        self.submitted_at = submitted_at
        self.state = PENDING
        self.error: SqlError | None = None
        self.columns: list[dict[str, Any]] = []
        self.result: results.ResultSpool | None = None
        self.finished_at: float | None = None
        self.cancel_requested = threading.Event()
        self.cursor: duckdb.DuckDBPyConnection | None = None
        self.lock = threading.Lock()
        self.done = asyncio.Event()

    async def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a terminal state; True if it was reached."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.done.wait()
        except TimeoutError:
            return False
        return True


class Engine:
    """The DuckDB database, the worker pool and every statement it has seen."""

    def __init__(
        self,
        config: WarehouseConfig,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._loop = loop
        self._clock = clock
        self._db = duckdb.connect(
            ":memory:",
            config={
                # No network: extensions that are not built in stay unavailable.
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                # Databricks SQL (ANSI mode) raises DIVIDE_BY_ZERO instead of returning inf/NULL.
                "ieee_floating_point_ops": False,
            },
        )
        self._db.execute("SET GLOBAL TimeZone = 'UTC'")
        if config.seed_samples:
            seed_samples(self._db)
        if config.data_dir is not None:
            attach_data_dir(self._db, config.data_dir)
        lock_down(self._db)
        self._spool_dir = tempfile.TemporaryDirectory(prefix="localwarehouse-")
        self._executor = ThreadPoolExecutor(config.max_running, "localwarehouse")
        self._statements: dict[str, Statement] = {}
        self._interrupters: set[asyncio.Task[None]] = set()
        # When a statement last arrived or ended: the idle clock of auto-stop starts there.
        self.last_activity = clock()

    # -- lifecycle of statements, called on the event loop --------------------------------

    def submit(self, request: ExecuteRequest) -> Statement:
        """Register a PENDING statement; `start` queues it for execution."""
        statement = Statement(str(uuid.uuid4()), request, self._clock())
        self._statements[statement.statement_id] = statement
        self.last_activity = statement.submitted_at
        return statement

    def start(self, statement: Statement) -> None:
        """Queue the statement on the worker pool."""
        self._executor.submit(self._run, statement)

    def lookup(self, statement_id: str) -> Statement:
        """The statement, after applying result expiry; 404 once purged or never issued."""
        statement = self._statements.get(statement_id)
        if statement is None or self._expire(statement):
            raise not_found(statement_id)
        return statement

    def cancel(self, statement: Statement) -> None:
        """Ask a statement to stop: a queued one is CANCELED now, a running one is interrupted."""
        if self._request_cancel(statement):
            task = self._loop.create_task(self._interrupt_until_done(statement))
            self._interrupters.add(task)
            task.add_done_callback(self._interrupters.discard)

    def _request_cancel(self, statement: Statement) -> bool:
        """Mark the statement canceled; True when it is running and must be interrupted."""
        with statement.lock:
            if statement.state == PENDING:
                statement.cancel_requested.set()  # ends its PENDING delay at once
                statement.state = CANCELED
                statement.finished_at = self._clock()
                self.last_activity = statement.finished_at
                self._notify(statement)
            elif statement.state == RUNNING:
                statement.cancel_requested.set()
                if statement.cursor is not None:
                    statement.cursor.interrupt()
                return True
        return False

    async def _interrupt_until_done(self, statement: Statement) -> None:
        # DuckDB forgets an interrupt that arrives before its query starts, so repeat it.
        for _ in range(int(INTERRUPT_FOR_S / INTERRUPT_EVERY_S)):
            if await statement.wait(INTERRUPT_EVERY_S):
                return
            self._interrupt(statement)

    def _interrupt(self, statement: Statement) -> None:
        with statement.lock:
            if statement.cursor is not None:
                statement.cursor.interrupt()

    def close_result(self, statement: Statement) -> None:
        """Turn a SUCCEEDED statement into CLOSED and free its result."""
        with statement.lock:
            if statement.state == SUCCEEDED:
                statement.state = CLOSED
                if statement.result is not None:
                    statement.result.close()

    def sweep(self) -> None:
        """Apply expiry and purge to every statement (run periodically)."""
        for statement in list(self._statements.values()):
            self._expire(statement)

    def statement_ids(self) -> list[str]:
        """Ids of every statement not yet purged, oldest first."""
        return list(self._statements)

    def active_count(self) -> int:
        """Statements not yet terminal (PENDING or RUNNING)."""
        return sum(1 for s in self._statements.values() if s.state not in TERMINAL)

    def active_statements(self) -> list[Statement]:
        """Statements not yet terminal (PENDING or RUNNING), oldest first."""
        return [s for s in self._statements.values() if s.state not in TERMINAL]

    def close(self) -> None:
        """Cancel everything, stop the workers and free the database and spool files."""
        running = [s for s in list(self._statements.values()) if self._request_cancel(s)]
        deadline = time.monotonic() + INTERRUPT_FOR_S
        while running and time.monotonic() < deadline:
            for statement in running:
                self._interrupt(statement)
            time.sleep(INTERRUPT_EVERY_S)
            running = [s for s in running if s.state == RUNNING]
        for task in list(self._interrupters):
            self._loop.call_soon_threadsafe(task.cancel)
        self._executor.shutdown(wait=True, cancel_futures=True)
        for statement in self._statements.values():
            if statement.result is not None:
                statement.result.close()
        self._statements.clear()
        self._db.close()
        self._spool_dir.cleanup()

    def _expire(self, statement: Statement) -> bool:
        """Close an expired result; return True (and forget it) when it is purged."""
        if statement.finished_at is None:
            return False
        age = self._clock() - statement.finished_at
        if age >= self._config.purge_after_s:
            self._statements.pop(statement.statement_id, None)
            self.close_result(statement)
            return True
        if age >= self._config.result_retention_s:
            self.close_result(statement)
        return False

    # -- execution, on a worker thread ----------------------------------------------------

    def _run(self, statement: Statement) -> None:
        delay = self._config.pending_delay_s
        if delay > 0 and statement.cancel_requested.wait(delay):
            return
        with statement.lock:
            if statement.state != PENDING:
                return
            statement.state = RUNNING
            statement.cursor = cursor = self._db.cursor()
        try:
            self._execute(statement, cursor)
        except (StatementCanceled, duckdb.InterruptException):
            self._finish(statement, CANCELED)
        except SqlError as exc:
            self._finish(statement, FAILED, error=exc)
        except Exception as exc:
            self._finish(statement, FAILED, error=self._failure(statement, exc))
        finally:
            with statement.lock:
                statement.cursor = None
            cursor.close()

    @staticmethod
    def _failure(statement: Statement, exc: Exception) -> SqlError:
        """The error a failed statement reports; a statement always ends, whatever failed."""
        if isinstance(exc, duckdb.Error):
            try:
                return sql_error_from_duckdb(exc)
            except Exception:
                log.exception(
                    "could not classify the error of statement %s", statement.statement_id
                )
        else:
            log.exception("statement %s failed unexpectedly", statement.statement_id)
        return SqlError("INTERNAL_ERROR", "The statement failed.", "XX000")

    def _execute(self, statement: Statement, cursor: duckdb.DuckDBPyConnection) -> None:
        request = statement.request

        def check_canceled() -> None:
            if statement.cancel_requested.is_set():
                raise StatementCanceled

        translated = translate(request.statement, request.parameters)
        if translated.sleep_ms and statement.cancel_requested.wait(translated.sleep_ms / 1000):
            raise StatementCanceled
        _use(cursor, request.catalog, request.schema)
        check_canceled()
        relation = cursor.sql(translated.sql, params=translated.params or None)
        spool = results.ResultSpool(Path(self._spool_dir.name))
        try:
            columns = self._produce(relation, request, spool, check_canceled)
        except BaseException:
            spool.close()
            raise
        self._finish(statement, SUCCEEDED, columns=columns, result=spool)

    def _produce(
        self,
        relation: duckdb.DuckDBPyRelation | None,
        request: ExecuteRequest,
        spool: results.ResultSpool,
        check_canceled: Callable[[], None],
    ) -> list[dict[str, Any]]:
        external = request.disposition == "EXTERNAL_LINKS"
        limits = results.Limits(
            chunk_rows=max(1, self._config.chunk_rows),
            chunk_bytes=max(1, self._config.chunk_bytes),
            row_limit=request.row_limit,
            byte_limit=request.byte_limit or (EXTERNAL_BYTE_LIMIT if external else None),
            inline_limit_bytes=None if external else self._config.inline_limit_bytes,
        )
        if relation is None:  # a statement without a result set
            results.spool_result((), results.json_encoder(limits), spool, check_canceled)
            return []
        names, types = list(relation.columns), list(relation.types)
        columns = [column_info(n, i, t) for i, (n, t) in enumerate(zip(names, types, strict=True))]
        if any(needs_narrowing(t) for t in types):
            relation = relation.project(
                ", ".join(
                    f"{narrowed_expression(f'#{i + 1}', t)} AS {_quote(n)}"
                    for i, (n, t) in enumerate(zip(names, types, strict=True))
                )
            )
        if request.row_limit is not None:
            # One more row reveals truncation (DuckDB's LIMIT is an int64 too).
            relation = relation.limit(min(request.row_limit + 1, INT64_MAX))
        encoder: Any
        if request.format == "ARROW_STREAM":
            reader = relation.to_arrow_reader(results.BATCH_ROWS)
            encoder = results.arrow_encoder(limits, reader.schema)
        else:
            if names:
                texts = [string_expression(f"#{i + 1}", t) for i, t in enumerate(types)]
                relation = relation.project(", ".join(texts))
            reader = relation.to_arrow_reader(results.BATCH_ROWS)
            if request.format == "CSV":
                encoder = results.csv_encoder(limits, names)
            else:
                encoder = results.json_encoder(limits)
        results.spool_result(reader, encoder, spool, check_canceled)
        return columns

    def _finish(
        self,
        statement: Statement,
        state: str,
        *,
        error: SqlError | None = None,
        columns: list[dict[str, Any]] | None = None,
        result: results.ResultSpool | None = None,
    ) -> None:
        with statement.lock:
            if statement.cancel_requested.is_set():
                # A cancel that arrived before the outcome was recorded wins the race.
                state, error = CANCELED, None
                if result is not None:
                    result.close()
                    result = None
            statement.state = state
            statement.error = error
            statement.columns = columns or []
            statement.result = result
            statement.finished_at = self._clock()
            self.last_activity = statement.finished_at
        self._notify(statement)

    def _notify(self, statement: Statement) -> None:
        # The loop may be gone when the warehouse is shutting down; nobody waits then.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(statement.done.set)


def lock_down(db: duckdb.DuckDBPyConnection) -> None:
    """Confine DuckDB to the data already loaded: no host files, network or extensions.

    With external access off, every file, directory, URL, ATTACH, COPY, EXPORT, INSTALL and
    LOAD fails with a PermissionException, whatever function or statement asks; locking the
    configuration keeps any statement from turning it back on. No spill directory: DuckDB
    would otherwise allow reads and writes under it (`.tmp` in the working directory). The
    extension and secret directories are set so that no setting or message shows the host's
    home directory.
    """
    db.execute("SET temp_directory = ''")
    db.execute("SET extension_directory = '/localwarehouse/extensions'")
    db.execute("SET secret_directory = '/localwarehouse/secrets'")
    db.execute("SET allow_community_extensions = false")
    db.execute("SET enable_external_access = false")
    db.execute("SET lock_configuration = true")


def _use(cursor: duckdb.DuckDBPyConnection, catalog: str | None, schema: str | None) -> None:
    """Apply the request's `catalog`/`schema` like USE CATALOG / USE SCHEMA."""
    if catalog is None and schema is None:
        return
    target = _quote(catalog or DEFAULT_CATALOG) + ("" if schema is None else "." + _quote(schema))
    try:
        cursor.execute(f"USE {target}")
    except duckdb.CatalogException:
        if schema is None:
            raise SqlError(
                "NO_SUCH_CATALOG_EXCEPTION", f"Catalog '{catalog}' was not found.", "42704"
            ) from None
        raise SqlError(
            "SCHEMA_NOT_FOUND", f"The schema `{schema}` cannot be found.", "42704"
        ) from None


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
