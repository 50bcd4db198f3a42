"""The statement engine: the life of a statement, written once for every route.

The API layer imports what it needs from here (this module's names), never the transport's
wire models or retry policy.
"""

from dbx_backend.engine.gate import AdhocSqlDisabled, Admitted, Gate, NotAdmitted, SqlTooLarge
from dbx_backend.engine.handles import UNKNOWN_HANDLE, HandleClaims, HandleSigner, UnknownHandle
from dbx_backend.engine.idempotency import (
    IDEMPOTENCY_HEADER,
    IdempotencyKeyReused,
    IdempotencyStore,
    Submitted,
    still_running,
)
from dbx_backend.engine.limiter import QueryLimiter, TooManyQueries
from dbx_backend.engine.normalize import Column, JsonValue, NormalizeOptions
from dbx_backend.engine.open_statements import OpenStatements, TooManyStatements
from dbx_backend.engine.parameters import InvalidQuery, ParamOutOfRange, ParamScalar, TypedParam
from dbx_backend.engine.query_service import (
    OpenStatement,
    PollSchedule,
    QueryOptions,
    QueryResult,
    QueryService,
    RowsPage,
    StatementInfo,
)
from dbx_backend.engine.reader import Timings
from dbx_backend.engine.tasks import TaskOwner

__all__ = [
    "IDEMPOTENCY_HEADER",
    "UNKNOWN_HANDLE",
    "AdhocSqlDisabled",
    "Admitted",
    "Column",
    "Gate",
    "HandleClaims",
    "HandleSigner",
    "IdempotencyKeyReused",
    "IdempotencyStore",
    "InvalidQuery",
    "JsonValue",
    "NormalizeOptions",
    "NotAdmitted",
    "OpenStatement",
    "OpenStatements",
    "ParamOutOfRange",
    "ParamScalar",
    "PollSchedule",
    "QueryLimiter",
    "QueryOptions",
    "QueryResult",
    "QueryService",
    "RowsPage",
    "SqlTooLarge",
    "StatementInfo",
    "Submitted",
    "TaskOwner",
    "Timings",
    "TooManyQueries",
    "TooManyStatements",
    "TypedParam",
    "UnknownHandle",
    "still_running",
]
