"""Pydantic models of the Statement Execution API wire protocol (reference §5).

The server may omit fields whose value is 0, false or empty, may send int64 fields as numeric
strings, and adds states and type names over time: the models default, coerce and accept plain
strings accordingly. Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator

from dbx_backend.warehouse.rows import RowArray


def _int64(value: Any) -> Any:
    # int64 fields may arrive as numeric strings (reference §5); None means "omitted".
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


Int64 = Annotated[int, BeforeValidator(_int64)]


def _rows(value: Any) -> RowArray:
    # Only the outer shape: the normalizer checks every row and cell as it converts them
    # (reference §7.2), so validating each cell here as well would pay for it twice. The
    # client hands over the rows' text unparsed (`RowArray`); a parsed array is wrapped.
    if isinstance(value, RowArray):
        return value
    if not isinstance(value, list):
        raise ValueError("data_array is not an array")  # noqa: TRY004 - pydantic wants ValueError
    return RowArray.of_rows(value)


# JSON_ARRAY rows: arrays of strings and nulls, checked by `RowConverter.convert_rows`.
JsonRows = Annotated[RowArray, PlainValidator(_rows)]


class WireModel(BaseModel):
    """Base for wire models: frozen, tolerant of fields the server adds later."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class State:
    """Statement states as the protocol spells them (reference §6.1); others may appear."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    CLOSED = "CLOSED"
    TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED, CLOSED})
    KNOWN = TERMINAL | {PENDING, RUNNING}


class ServiceError(WireModel):
    """`status.error` of a FAILED (or CANCELED) statement."""

    error_code: str | None = None
    message: str = ""


class StatementStatus(WireModel):
    """Where a statement is in its lifecycle."""

    state: str = State.PENDING
    error: ServiceError | None = None
    sql_state: str | None = None


class ColumnInfo(WireModel):
    """One column of the result schema; `type_name` is kept raw (it may be off-enum)."""

    name: str = ""
    position: int = 0
    type_name: str | None = None
    type_text: str = ""
    type_precision: int | None = None
    type_scale: int | None = None
    type_interval_type: str | None = None


class ResultSchema(WireModel):
    """The manifest's schema."""

    column_count: int = 0
    columns: tuple[ColumnInfo, ...] = ()


class BaseChunkInfo(WireModel):
    """Per-chunk metadata listed in the manifest."""

    chunk_index: int = 0
    row_offset: Int64 = 0
    row_count: Int64 = 0
    byte_count: Int64 = 0


class ResultManifest(WireModel):
    """Schema and totals of a SUCCEEDED statement's result."""

    format: str = "JSON_ARRAY"
    schema_: ResultSchema = Field(default_factory=ResultSchema, alias="schema")
    total_chunk_count: int = 0
    total_row_count: Int64 = 0
    total_byte_count: Int64 = 0
    chunks: tuple[BaseChunkInfo, ...] = ()
    truncated: bool = False


class ExternalLink(WireModel):
    """A presigned download URL for one chunk (sensitive: never log the URL or headers)."""

    external_link: str
    expiration: str | None = None
    http_headers: dict[str, str] = Field(default_factory=dict)
    chunk_index: int = 0
    row_offset: Int64 = 0
    row_count: Int64 = 0
    byte_count: Int64 = 0
    next_chunk_index: int | None = None
    next_chunk_internal_link: str | None = None

    def __repr__(self) -> str:
        return f"ExternalLink(chunk_index={self.chunk_index}, row_count={self.row_count})"

    __str__ = __repr__


class ResultData(WireModel):
    """One chunk: the `result` of a statement response, or the chunk endpoint's body."""

    chunk_index: int = 0
    row_offset: Int64 = 0
    row_count: Int64 = 0
    byte_count: Int64 = 0
    data_array: JsonRows | None = None
    external_links: tuple[ExternalLink, ...] | None = None
    next_chunk_index: int | None = None
    next_chunk_internal_link: str | None = None

    def next_pointer(self) -> tuple[int | None, str | None]:
        """The next chunk's index and internal link, looking in the links too (reference §5.5)."""
        index, link = self.next_chunk_index, self.next_chunk_internal_link
        for ext in self.external_links or ():
            index = ext.next_chunk_index if ext.next_chunk_index is not None else index
            link = ext.next_chunk_internal_link or link
        return index, link


class StatementResponse(WireModel):
    """The body of execute and get-status responses."""

    statement_id: str
    status: StatementStatus = Field(default_factory=StatementStatus)
    manifest: ResultManifest | None = None
    result: ResultData | None = None


class StatementParameter(WireModel):
    """One named parameter of an execute request (reference §11): `value` is a string or null."""

    name: str
    value: str | None = None
    type: str | None = None


class ErrorBody(WireModel):
    """The standard Databricks error JSON (reference §8.1), legacy `error` field included."""

    error_code: str | int | None = None
    message: str | None = None
    error: str | None = None
    details: list[dict[str, Any]] = Field(default_factory=list)


class WarehouseState:
    """SQL warehouse states (Warehouses API `State`, warehouses reference §1.1); others may
    appear and are treated as "not running"."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    DELETING = "DELETING"
    DELETED = "DELETED"


class WarehouseHealth(WireModel):
    """`health` of a warehouse; absent means healthy (warehouses reference §1.1)."""

    status: str | None = None
    summary: str | None = None


class WarehouseInfo(WireModel):
    """The fields of `GetWarehouseResponse` the service reads: the state, and health."""

    id: str = ""
    state: str = "UNKNOWN"
    health: WarehouseHealth | None = None
