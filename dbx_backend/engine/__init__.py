"""The statement engine: the life of a statement, written once for every route.

The API layer imports what it needs from here (this module's names), never the transport's
wire models or retry policy. The Arrow form (`from dbx_backend.engine import arrow_form`) is
imported where an Arrow answer is made, so a service that never sends one never loads pyarrow.
"""

from dbx_backend.engine.cache_control import CacheRequest, InvalidCacheControl, parse_cache_control
from dbx_backend.engine.cache_key import CacheKeyParts, cache_key
from dbx_backend.engine.cache_store import CacheEntry, strong_etag
from dbx_backend.engine.gate import AdhocSqlDisabled, Admitted, Gate, NotAdmitted, SqlTooLarge
from dbx_backend.engine.handles import UNKNOWN_HANDLE, HandleClaims, HandleSigner, UnknownHandle
from dbx_backend.engine.idempotency import (
    IDEMPOTENCY_HEADER,
    IdempotencyKeyReused,
    IdempotencyStore,
    Submitted,
    still_running,
)
from dbx_backend.engine.json_answer import EncodedRows, JsonAnswer
from dbx_backend.engine.json_lines import JsonLines, Lines, encode_rows
from dbx_backend.engine.limiter import QueryLimiter, TooManyQueries
from dbx_backend.engine.live import LiveResult, PairedForm, TeeLimits, read_live
from dbx_backend.engine.memory import MemoryBudget, MemoryBusy, Reservation, released_on_error
from dbx_backend.engine.normalize import Column, JsonValue, NormalizeOptions
from dbx_backend.engine.open_statements import OpenStatements, TooManyStatements
from dbx_backend.engine.parameters import (
    InvalidQuery,
    ParamOutOfRange,
    ParamScalar,
    TypedParam,
    to_statement_parameters,
)
from dbx_backend.engine.query_service import (
    OpenStatement,
    PollSchedule,
    QueryOptions,
    QueryResult,
    QueryService,
    RowsPage,
    StatementInfo,
)
from dbx_backend.engine.reader import ChunkForm, JsonRows, Timings
from dbx_backend.engine.result_cache import Answer, CachePolicy, NotCached, Produced, warehouse_note
from dbx_backend.engine.sqlfacts import sql_facts
from dbx_backend.engine.tasks import TaskOwner
from dbx_backend.engine.warehouse_state import (
    WarehouseNotRunning,
    WarehouseStarting,
    WarehouseStopped,
)

__all__ = [
    "IDEMPOTENCY_HEADER",
    "UNKNOWN_HANDLE",
    "AdhocSqlDisabled",
    "Admitted",
    "Answer",
    "CacheEntry",
    "CacheKeyParts",
    "CachePolicy",
    "CacheRequest",
    "ChunkForm",
    "Column",
    "EncodedRows",
    "Gate",
    "HandleClaims",
    "HandleSigner",
    "IdempotencyKeyReused",
    "IdempotencyStore",
    "InvalidCacheControl",
    "InvalidQuery",
    "JsonAnswer",
    "JsonLines",
    "JsonRows",
    "JsonValue",
    "Lines",
    "LiveResult",
    "MemoryBudget",
    "MemoryBusy",
    "NormalizeOptions",
    "NotAdmitted",
    "NotCached",
    "OpenStatement",
    "OpenStatements",
    "PairedForm",
    "ParamOutOfRange",
    "ParamScalar",
    "PollSchedule",
    "Produced",
    "QueryLimiter",
    "QueryOptions",
    "QueryResult",
    "QueryService",
    "Reservation",
    "RowsPage",
    "SqlTooLarge",
    "StatementInfo",
    "Submitted",
    "TaskOwner",
    "TeeLimits",
    "Timings",
    "TooManyQueries",
    "TooManyStatements",
    "TypedParam",
    "UnknownHandle",
    "WarehouseNotRunning",
    "WarehouseStarting",
    "WarehouseStopped",
    "arrow_form",  # a module, imported on first use (pyarrow)
    "cache_key",
    "encode_rows",
    "parse_cache_control",
    "read_live",
    "released_on_error",
    "sql_facts",
    "still_running",
    "strong_etag",
    "to_statement_parameters",
    "warehouse_note",
]
