"""The request and response contract the web app relies on (DESIGN.md, "The API contract").

These models are the single source of truth: handlers validate with them, and the OpenAPI
document is generated from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

ParamName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
SqlTypeName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*( ?\(\s*\d+\s*(,\s*\d+\s*)?\))?$")
]
# No backtick, semicolon, control character or space; spelt out so that Python and JSON Schema
# agree on what `\s` would mean.
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^`;\x00-\x20\x7f]+$")
]


NO_EXTRA_KEYS: JsonDict = {"additionalProperties": False}
# JSON has no NaN or Infinity; a number that overflows to one (1e400) is refused, not passed on.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Scalar = bool | int | FiniteFloat | str | None

# The largest integer every JSON reader (JavaScript's included) holds exactly: the bound of
# `row_limit`, of the statements API's `offset`, and of every count and offset in an answer.
MAX_SAFE_INT = 2**53 - 1
# A request's deadline is capped by MAX_QUERY_TIMEOUT_S; the schema's own bound is one day.
MAX_TIMEOUT_S = 86_400.0
MAX_DECIMAL_DIGITS = 38  # DECIMAL(38, s) is the widest Databricks type
DecimalDigits = Annotated[int, Field(ge=1, le=MAX_DECIMAL_DIGITS)]
DecimalScale = Annotated[int, Field(ge=0, le=MAX_DECIMAL_DIGITS)]


class TypedParamModel(BaseModel):
    """A parameter with an explicit SQL type: `{"value": "2024-01-01", "type": "DATE"}`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    value: Scalar = Field(description="The value; null is SQL NULL.")
    type: SqlTypeName = Field(description="A scalar SQL type such as DATE, DECIMAL(10,2).")


class RunOptions(BaseModel):
    """How to run a statement and shape its result; shared by ad-hoc and named queries."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    row_limit: int | None = Field(
        default=None, ge=1, le=MAX_SAFE_INT, description="At most this many rows."
    )
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_S,
        allow_inf_nan=False,
        description="Deadline in seconds (capped at MAX_QUERY_TIMEOUT_S).",
    )
    long_as_string: bool = Field(
        default=False, description="Render LONG (BIGINT) values as strings, for JavaScript."
    )
    disposition: Literal["INLINE", "EXTERNAL_LINKS"] | None = Field(
        default=None,
        description="How the warehouse hands over the result: INLINE (default for JSON) or "
        "EXTERNAL_LINKS (default for NDJSON/CSV streams; for large results).",
    )

    @field_validator("row_limit", mode="before")
    @classmethod
    def _whole_float_to_int(cls, value: Any) -> Any:
        # JSON Schema counts 10.0 as an integer; accept it as 10 (never "10", never 10.5).
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


class QueryRequest(RunOptions):
    """Body of `POST /api/query` and `POST /api/statements`: one SQL statement."""

    sql: str = Field(
        description="One SQL statement; `:name` markers take values from `params`.",
        json_schema_extra={"minLength": 1, "pattern": r"\S"},  # what `_sql_not_blank` checks
    )
    params: dict[ParamName, Scalar | TypedParamModel] = Field(
        default_factory=dict,
        json_schema_extra=NO_EXTRA_KEYS,
        description="Named parameters: int -> BIGINT (so within -2^63 .. 2^63-1), "
        "float -> DOUBLE, bool -> BOOLEAN, string -> STRING, null -> NULL, or {value, type} "
        "for another type.",
    )
    catalog: Identifier | None = Field(default=None, description="Default catalog.")
    schema_: Identifier | None = Field(default=None, alias="schema", description="Default schema.")

    @field_validator("sql")
    @classmethod
    def _sql_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class SubmitRequest(QueryRequest):
    """Body of `POST /api/statements`: a statement, and how long to wait for its end."""

    wait_s: float = Field(
        default=0,
        ge=0,
        le=50,
        allow_inf_nan=False,
        description="Seconds to wait for the statement to end before answering (0: answer at "
        "once). It keeps running after the answer either way; timeout_s caps the wait.",
    )


class NamedQueryRequest(RunOptions):
    """Body of `POST /api/queries/{name}`: values for the query's declared parameters."""

    params: dict[ParamName, Scalar] = Field(
        default_factory=dict,
        json_schema_extra=NO_EXTRA_KEYS,
        description="Values for the declared parameters.",
    )


class NamedQueryParam(BaseModel):
    """One declared parameter of a named query."""

    name: str
    type: str
    required: bool
    default: str | None
    description: str | None


class NamedQueryCache(BaseModel):
    """A named query's own cache policy (its `-- cache:` line); a `ttl_s` of 0 is `off`."""

    ttl_s: float = Field(ge=0, le=MAX_SAFE_INT)
    stale_s: float = Field(ge=0, le=MAX_SAFE_INT)


class NamedQueryInfo(BaseModel):
    """A named query as `GET /api/queries` lists it; `cache` null: the service's policy."""

    name: str
    description: str | None
    params: list[NamedQueryParam]
    cache: NamedQueryCache | None


class NamedQueryList(BaseModel):
    """Body of `GET /api/queries`."""

    queries: list[NamedQueryInfo]


def _absent_when_unset(schema: JsonDict) -> None:
    # The field is left out of the answer rather than sent as null: no default to document.
    schema.pop("default", None)


JsonKind = Literal["number", "string", "boolean", "array", "object", "null", "any"]
ColumnType = Literal[
    "ARRAY", "BINARY", "BOOLEAN", "BYTE", "CHAR", "DATE", "DECIMAL", "DOUBLE", "FLOAT",
    "GEOGRAPHY", "GEOMETRY", "INT", "INTERVAL", "LONG", "MAP", "NULL", "SHORT", "STRING",
    "STRUCT", "TIMESTAMP", "TIMESTAMP_NTZ", "USER_DEFINED_TYPE", "VARIANT", "UNKNOWN",
]  # fmt: skip


class JsonShape(BaseModel):
    """How values are written in JSON; a nested value describes its parts the same way."""

    json_type: JsonKind = Field(
        description="number, string, boolean, array, object, null, or any (VARIANT, and nested "
        "values whose parts the warehouse did not describe). FLOAT/DOUBLE are number, with NaN "
        'and the infinities as the strings "NaN", "Infinity", "-Infinity".'
    )
    type: ColumnType | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra=_absent_when_unset,
        description="The SQL type of the values (absent for a map entry's {key, value}): "
        "tells a LONG sent as a string from a DECIMAL.",
    )
    items: JsonShape | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra=_absent_when_unset,
        description="array: the shape of its elements.",
    )
    fields: list[JsonField] | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra=_absent_when_unset,
        description="object from a STRUCT: its members, in order.",
    )
    values: JsonShape | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra=_absent_when_unset,
        description="object from a MAP with string keys: the shape of its values.",
    )


class JsonField(JsonShape):
    """One member of a struct and its shape."""

    name: str


class ColumnModel(JsonShape):
    """One result column, with how its values are written in this response."""

    name: str
    type: ColumnType = Field(
        description="The warehouse's type_name; a type outside this list is UNKNOWN (see "
        "type_text) and its values are text."
    )
    type_text: str = Field(description="The full SQL type, e.g. DECIMAL(10,2), ARRAY<INT>.")
    position: int = Field(ge=0, le=MAX_SAFE_INT)
    nullable: bool | None = Field(description="Always null: the warehouse does not say.")
    precision: DecimalDigits | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_absent_when_unset, description="DECIMAL only."
    )
    scale: DecimalScale | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_absent_when_unset, description="DECIMAL only."
    )


# Any JSON value: a row's cells, shaped by their columns' `json_type`. The schema itself is
# written in openapi.py (JSON_VALUE), as pydantic has no recursive form for it.
JsonValue = Annotated[Any, WithJsonSchema({"$ref": "#/components/schemas/JsonValue"})]
Row = list[JsonValue]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]


class QueryResponse(BaseModel):
    """Body of a successful `POST /api/query`."""

    columns: list[ColumnModel]
    rows: list[Row] = Field(description="Values shaped by their column's json_type.")
    row_count: Count
    truncated: bool = Field(description="True when row_limit or MAX_RESULT_ROWS cut the result.")
    statement_id: str = Field(description="The warehouse's statement id (its query history).")


class HealthResponse(BaseModel):
    """Body of `GET /health`."""

    status: Literal["ok"]


class WarehouseInfo(BaseModel):
    """The warehouse's state as the service last read it, and when it should be running."""

    state: str = Field(
        description="RUNNING, STARTING, STOPPED, STOPPING, DELETING, DELETED or UNKNOWN."
    )
    eta_s: Count | None = Field(description="Seconds until it is expected to be RUNNING.")
    starting_for_s: Count | None = Field(
        default=None, description="Seconds since its start began, while STARTING."
    )


class ReadyResponse(BaseModel):
    """Body of `GET /ready`: the last background check of the warehouse, and its age."""

    status: Literal["ready", "not_ready"]
    checked_at: str | None = Field(
        description="When the last check ended (ISO 8601, UTC); null until the first one ends."
    )
    age_s: float | None = Field(
        ge=0, le=MAX_SAFE_INT, description="Seconds since the last check ended."
    )
    warehouse: WarehouseInfo = Field(
        description="The warehouse's state (read without starting it) and its ETA."
    )


StatementState = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "CLOSED"]
Handle = Annotated[str, Field(description="An opaque, signed handle for this statement.")]


class StatementSubmitted(BaseModel):
    """Body of `POST /api/statements` (202): the handle, and the state when the answer left."""

    statement_id: Handle
    state: StatementState = Field(
        description="Usually PENDING or RUNNING; a statement that ended within wait_s says so."
    )


class CancelSent(BaseModel):
    """Body of `DELETE /api/statements/{id}` (202): the cancel was sent; poll for the outcome."""

    statement_id: Handle


class StatementRunning(BaseModel):
    """Not ended yet: poll again."""

    statement_id: Handle
    state: Literal["PENDING", "RUNNING"]
    elapsed_ms: Count = Field(description="Milliseconds since the statement was submitted.")


class StatementSucceeded(BaseModel):
    """Ended with a result: its columns, its size and the first page of its rows."""

    statement_id: Handle
    state: Literal["SUCCEEDED"]
    columns: list[ColumnModel]
    row_count: Count = Field(description="Rows in the whole result.")
    truncated: bool = Field(description="True when row_limit or byte_limit cut the result.")
    rows: list[Row] = Field(description="The first page of rows (`limit` of them at most).")
    next_offset: Count | None = Field(
        description="Offset of the next page (GET .../rows?offset=), or null after the last."
    )


class StatementFailed(BaseModel):
    """Ended with an error: what the warehouse said about the SQL (usually SQL_ERROR)."""

    statement_id: Handle
    state: Literal["FAILED"]
    error: ErrorDetail


class StatementEnded(BaseModel):
    """Ended without a result to read: CANCELED, or CLOSED (its result expired)."""

    statement_id: Handle
    state: Literal["CANCELED", "CLOSED"]


class StatementStatus(
    RootModel[
        Annotated[
            StatementRunning | StatementSucceeded | StatementFailed | StatementEnded,
            Field(discriminator="state"),
        ]
    ]
):
    """Body of `GET /api/statements/{id}`, 200 in every state; `state` says which shape."""


class RowsPage(BaseModel):
    """Body of `GET /api/statements/{id}/rows`."""

    rows: list[Row]
    offset: Count
    row_count: Count = Field(description="Rows in this page.")
    total_row_count: Count
    next_offset: Count | None = Field(description="Offset of the next page, or null after it.")


class ErrorDetail(BaseModel):
    """What went wrong, for people and programs."""

    code: str = Field(description="Stable machine-readable code, e.g. SQL_ERROR.")
    message: str
    request_id: str
    retryable: bool = Field(
        description="Whether sending the same request again may succeed without running a "
        "statement twice (false after a submit that may have run when READ_ONLY=false)."
    )
    statement_id: str | None = Field(
        default=None, description="The warehouse's statement id, when the failure has one."
    )
    sql_state: str | None = None
    field: str | None = Field(default=None, description="The request field at fault, if any.")
    state: StatementState | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra=_absent_when_unset,
        description="STATEMENT_NOT_READY only: the statement's state.",
    )
    warehouse: WarehouseInfo | None = Field(
        default=None,
        description="WAREHOUSE_STARTING / WAREHOUSE_STOPPED: its state, ETA and how long it "
        "has been starting.",
    )


class ErrorResponse(BaseModel):
    """Every error response: `{"error": {...}}`."""

    error: ErrorDetail


class NotReadyResponse(ReadyResponse):
    """Body of `GET /ready` answering 503: the readiness fields beside the error."""

    error: ErrorDetail


class NdjsonHeader(BaseModel):
    """The first line of an NDJSON result: the columns, and the size when the warehouse said it."""

    columns: list[ColumnModel]
    statement_id: str = Field(description="The warehouse's statement id.")
    total_row_count: Count | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra=_absent_when_unset,
        description="Rows the stream will carry, for a progress bar.",
    )
    chunk_count: Count | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra=_absent_when_unset,
        description="Chunks the warehouse holds the result in.",
    )


class NdjsonFooter(BaseModel):
    """The last line of a complete NDJSON result."""

    row_count: Count
    truncated: bool
    server_timing: str = Field(
        description="Where the time went, in Server-Timing syntax: wait, fetch and convert "
        "(milliseconds)."
    )


class OpenApiInfo(BaseModel):
    """The document's `info`."""

    title: str
    version: str
    description: str | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_absent_when_unset
    )


class OpenApiDocument(BaseModel):
    """Body of `GET /openapi.json`: an OpenAPI 3.1 document (this one)."""

    model_config = ConfigDict(extra="allow")

    openapi: str = Field(pattern=r"^3\.1\.\d+$")
    info: OpenApiInfo
    paths: dict[str, dict[str, Any]]
    components: dict[str, dict[str, Any]]
