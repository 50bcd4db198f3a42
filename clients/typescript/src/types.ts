// The API's shapes, named for callers: every one is generated from the service's OpenAPI
// document (api.d.ts), so a change there reaches here at compile time.
import type { components } from "../api.js";

type Schemas = components["schemas"];

export type Column = Schemas["ColumnModel"];
export type JsonShape = Schemas["JsonShape"];
export type JsonKind = Column["json_type"];
export type ColumnType = Column["type"];
export type ErrorDetail = Schemas["ErrorDetail"];
/** Every `error.code` the service sends: a typo is a compile error. */
export type ErrorCode = ErrorDetail["code"];
export type StatementState = Schemas["StatementSubmitted"]["state"];
export type StatementSubmitted = Schemas["StatementSubmitted"];
export type CancelSent = Schemas["CancelSent"];
export type StatementRunning = Schemas["StatementRunning"];
/** SUCCEEDED, with its first page of rows (cells may be `bigint` with the `bigint` option). */
export type StatementSucceeded = Omit<Schemas["StatementSucceeded"], "rows"> & { rows: Row[] };
export type StatementFailed = Schemas["StatementFailed"];
export type StatementEnded = Schemas["StatementEnded"];
/** `GET /api/statements/{id}`: a union on `state`, so `if (s.state === "SUCCEEDED")` narrows. */
export type StatementStatus = StatementRunning | StatementSucceeded | StatementFailed | StatementEnded;
/** A statement that has ended: what `waitFor()` resolves to. */
export type StatementOutcome = Exclude<StatementStatus, StatementRunning>;
export type RowsPage = Omit<Schemas["RowsPage"], "rows"> & { rows: Row[] };
export type QueryRequest = Schemas["QueryRequest"];
export type SubmitRequest = Schemas["SubmitRequest"];
export type NamedQueryInfo = Schemas["NamedQueryInfo"];
export type NamedQueryList = Schemas["NamedQueryList"];
export type NdjsonHeader = Schemas["NdjsonHeader"];
export type NdjsonFooter = Schemas["NdjsonFooter"];
export type Disposition = NonNullable<QueryRequest["disposition"]>;
/** A named parameter's value: a JSON scalar, or `{value, type}` to name the SQL type. */
export type ParamValue = QueryRequest["params"] extends infer P
  ? P extends Record<string, infer V>
    ? V
    : never
  : never;

/** One cell of a row. `bigint` appears only with the client's `bigint` option (LONG values). */
export type Cell = string | number | boolean | null | bigint | Cell[] | { [key: string]: Cell };
/** One row: its cells in column order. Callers may name a tuple type for their SQL. */
export type Row = readonly Cell[];
