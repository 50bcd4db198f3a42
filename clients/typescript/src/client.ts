import { longsAsBigInt } from "./cells.js";
import { DbxError, envelope, errorOf } from "./errors.js";
import { ndjsonLines } from "./ndjson.js";
import type {
  CancelSent,
  Column,
  Disposition,
  NamedQueryList,
  NdjsonFooter,
  NdjsonHeader,
  ParamValue,
  Row,
  RowsPage,
  StatementOutcome,
  StatementRunning,
  StatementStatus,
  StatementSubmitted,
} from "./types.js";

const NDJSON = "application/x-ndjson";
const ARROW = "application/vnd.apache.arrow.stream";

export interface ClientOptions {
  /** Where the service is: `http://localhost:4000`, or a same-origin proxy such as `/api/dbx`. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <key>`; keep it on the server side (see the README). */
  apiKey?: string;
  /** Headers added to every request. */
  headers?: Record<string, string>;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Exact LONGs as `bigint`, at any depth (asks for `long_as_string` and converts). */
  bigint?: boolean;
}

/** How the result cache may answer (the request's `Cache-Control`). */
export type CacheMode = "default" | "no-cache" | "no-store" | "only-if-cached";

export interface RunOptions {
  params?: Record<string, ParamValue>;
  catalog?: string;
  schema?: string;
  /** At most this many rows. */
  rowLimit?: number;
  /** The query's deadline, in seconds (the service caps it). */
  timeoutS?: number;
  /** LONG values as strings (always on with the client's `bigint` option). */
  longAsString?: boolean;
  disposition?: Disposition;
  cache?: CacheMode;
  signal?: AbortSignal;
}

/** Options of an Arrow answer: LONGs are int64 there (apache-arrow reads them as `bigint`). */
export type ArrowOptions = Omit<RunOptions, "longAsString">;

export interface SubmitOptions extends RunOptions {
  /** Seconds the submit may wait for the statement to end (0..50; default 0). */
  waitS?: number;
  /** The same key within the service's window returns the same handle: a safe retry. */
  idempotencyKey?: string;
}

export interface WaitOptions {
  signal?: AbortSignal;
  /** Give up (TimeoutError) after this long; default: wait as long as it runs. */
  timeoutMs?: number;
  /** First delay between polls; it grows by `factor` up to `maxDelayMs`. */
  initialDelayMs?: number;
  factor?: number;
  maxDelayMs?: number;
  /** Rows in the first page of a SUCCEEDED answer (0..10000; default 1000). */
  limit?: number;
}

export interface PagesOptions extends WaitOptions {
  /** Rows per page (1..10000; default 1000). */
  pageSize?: number;
}

export interface QueryResult<R extends Row = Row> {
  columns: Column[];
  rows: R[];
  row_count: number;
  truncated: boolean;
  statement_id: string;
  /** The response's `Server-Timing` and `X-Request-ID`. */
  serverTiming: string | null;
  requestId: string | null;
}

/** A typed client of one dbx-backend service. */
export class DbxClient {
  readonly #baseUrl: string;
  readonly #headers: Record<string, string>;
  readonly #fetch: typeof fetch;
  readonly #bigint: boolean;

  constructor(options: ClientOptions) {
    this.#baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#headers = { ...options.headers };
    if (options.apiKey !== undefined) this.#headers.Authorization = `Bearer ${options.apiKey}`;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#bigint = options.bigint ?? false;
  }

  /** Run one statement and return its whole result. */
  async query<R extends Row = Row>(sql: string, options: RunOptions = {}): Promise<QueryResult<R>> {
    return this.#result<R>("/api/query", { sql, ...this.#body(options) }, options);
  }

  /** Rows of one statement as they arrive (NDJSON), one at a time; abort with `signal`. */
  stream<R extends Row = Row>(sql: string, options: RunOptions = {}): RowStream<R> {
    return this.#stream<R>("/api/query", { sql, ...this.#body(options) }, options);
  }

  /**
   * One statement's result as an Arrow IPC stream, to hand to apache-arrow's readers:
   * `await tableFromIPC(await client.arrow(sql))` or `RecordBatchReader.from(...)` for batches
   * as they arrive. Column types are the README's type table; each field's metadata has
   * `type_text` and `type_name`. An error before the first byte is a `DbxError`; one after it
   * errors the stream, so a reader fails instead of returning a short table.
   */
  async arrow(sql: string, options: ArrowOptions = {}): Promise<ReadableStream<Uint8Array>> {
    return this.#arrow("/api/query", { sql, ...this.#body(options) }, options);
  }

  /** A named query's result as an Arrow IPC stream (see `arrow`). */
  async arrowQuery(
    name: string,
    params: Record<string, string | number | boolean | null> = {},
    options: Omit<ArrowOptions, "params" | "catalog" | "schema"> = {},
  ): Promise<ReadableStream<Uint8Array>> {
    return this.#arrow(namedPath(name), { params, ...this.#body(options) }, options);
  }

  /** The named queries and their parameters. */
  async listQueries(options: { signal?: AbortSignal } = {}): Promise<NamedQueryList> {
    const response = await this.#call("GET", "/api/queries", undefined, options.signal);
    return (await response.json()) as NamedQueryList;
  }

  /** Run a named query with values for its declared parameters. */
  async runQuery<R extends Row = Row>(
    name: string,
    params: Record<string, string | number | boolean | null> = {},
    options: Omit<RunOptions, "params" | "catalog" | "schema"> = {},
  ): Promise<QueryResult<R>> {
    return this.#result<R>(namedPath(name), { params, ...this.#body(options) }, options);
  }

  /** A named query's rows as they arrive. */
  streamQuery<R extends Row = Row>(
    name: string,
    params: Record<string, string | number | boolean | null> = {},
    options: Omit<RunOptions, "params" | "catalog" | "schema"> = {},
  ): RowStream<R> {
    return this.#stream<R>(namedPath(name), { params, ...this.#body(options) }, options);
  }

  /** Start a long statement; the handle it answers is the `id` of the calls below. */
  async submit(sql: string, options: SubmitOptions = {}): Promise<StatementSubmitted> {
    const body: Record<string, unknown> = { sql, ...this.#body(options) };
    if (options.waitS !== undefined) body.wait_s = options.waitS;
    const headers: Record<string, string> = {};
    if (options.idempotencyKey !== undefined) headers["Idempotency-Key"] = options.idempotencyKey;
    const response = await this.#call("POST", "/api/statements", body, options.signal, headers);
    return (await response.json()) as StatementSubmitted;
  }

  /** Where a statement is; narrow on `state` to read what each state carries. */
  async status(
    handle: string,
    options: { limit?: number; signal?: AbortSignal } = {},
  ): Promise<StatementStatus> {
    const query = options.limit === undefined ? "" : `?limit=${options.limit}`;
    const response = await this.#call("GET", `${statementPath(handle)}${query}`, undefined, options.signal);
    const status = (await response.json()) as StatementStatus;
    if (status.state === "SUCCEEDED" && this.#bigint) {
      status.rows = longsAsBigInt(status.rows, status.columns);
    }
    return status;
  }

  /** Poll with a growing delay until the statement ends; resolves to its final status. */
  async waitFor(handle: string, options: WaitOptions = {}): Promise<StatementOutcome> {
    const { signal, timeoutMs, initialDelayMs = 100, factor = 1.5, maxDelayMs = 2000 } = options;
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    let delay = initialDelayMs;
    for (;;) {
      const status = await this.status(handle, pick({ limit: options.limit, signal }));
      if (!isRunning(status)) return status;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new DOMException(`statement still ${status.state} after ${timeoutMs} ms`, "TimeoutError");
      }
      await sleep(Math.min(delay, left), signal);
      delay = Math.min(maxDelayMs, delay * factor);
    }
  }

  /** A SUCCEEDED statement's rows, a page at a time (waiting for it to end first). */
  async *pages<R extends Row = Row>(handle: string, options: PagesOptions = {}): AsyncGenerator<R[]> {
    const pageSize = options.pageSize ?? 1000;
    const outcome = await this.waitFor(handle, { ...options, limit: pageSize });
    if (outcome.state === "FAILED") throw new DbxError(200, outcome.error);
    if (outcome.state !== "SUCCEEDED") {
      throw new DbxError(409, {
        code: "STATEMENT_NOT_READY",
        message: `the statement is ${outcome.state}: it has no rows to read`,
        request_id: "",
        retryable: false,
        state: outcome.state,
      });
    }
    yield outcome.rows as unknown as R[];
    let offset = outcome.next_offset;
    // Bounded: every page but the last holds `pageSize` rows.
    for (let page = 0; offset !== null && page <= outcome.row_count / pageSize; page += 1) {
      const path = `${statementPath(handle)}/rows?offset=${offset}&limit=${pageSize}`;
      const response = await this.#call("GET", path, undefined, options.signal);
      const body = (await response.json()) as RowsPage;
      yield (this.#bigint ? longsAsBigInt(body.rows, outcome.columns) : body.rows) as R[];
      offset = body.next_offset;
    }
  }

  /** Ask the warehouse to cancel; the statement may still end first (poll to learn). */
  async cancel(handle: string, options: { signal?: AbortSignal } = {}): Promise<CancelSent> {
    const response = await this.#call("DELETE", statementPath(handle), undefined, options.signal);
    return (await response.json()) as CancelSent;
  }

  // -- the wire -----------------------------------------------------------------------------

  #body(options: RunOptions): Record<string, unknown> {
    const body: Record<string, unknown> = {};
    if (options.params !== undefined) body.params = options.params;
    if (options.catalog !== undefined) body.catalog = options.catalog;
    if (options.schema !== undefined) body.schema = options.schema;
    if (options.rowLimit !== undefined) body.row_limit = options.rowLimit;
    if (options.timeoutS !== undefined) body.timeout_s = options.timeoutS;
    if (options.disposition !== undefined) body.disposition = options.disposition;
    const longAsString = this.#bigint || options.longAsString;
    if (longAsString !== undefined) body.long_as_string = longAsString;
    return body;
  }

  async #result<R extends Row>(
    path: string,
    body: Record<string, unknown>,
    options: RunOptions,
  ): Promise<QueryResult<R>> {
    const response = await this.#call("POST", path, body, options.signal, cacheHeaders(options));
    const answer = (await response.json()) as Omit<QueryResult, "serverTiming" | "requestId">;
    const rows = this.#bigint ? longsAsBigInt<R>(answer.rows as unknown[][], answer.columns) : (answer.rows as R[]);
    return {
      ...answer,
      rows,
      serverTiming: response.headers.get("Server-Timing"),
      requestId: response.headers.get("X-Request-ID"),
    };
  }

  async #arrow(
    path: string,
    body: Record<string, unknown>,
    options: ArrowOptions,
  ): Promise<ReadableStream<Uint8Array>> {
    delete body.long_as_string; // int64 holds every LONG
    const headers = { ...cacheHeaders(options), Accept: ARROW };
    const response = await this.#call("POST", path, body, options.signal, headers);
    if (response.body === null) throw new TypeError("the Arrow answer has no body");
    // Piped, so the stream outlives `response`: undici cancels the body of a collected Response
    // whose stream is not locked, and the caller may start reading it after a collection.
    return response.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>());
  }

  #stream<R extends Row>(path: string, body: Record<string, unknown>, options: RunOptions): RowStream<R> {
    const headers = { ...cacheHeaders(options), Accept: NDJSON };
    return new RowStream<R>(() => this.#call("POST", path, body, options.signal, headers), this.#bigint);
  }

  async #call(
    method: string,
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    const init: RequestInit = {
      method,
      headers: {
        Accept: "application/json",
        ...this.#headers,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    if (signal !== undefined) init.signal = signal;
    const response = await this.#fetch(`${this.#baseUrl}${path}`, init);
    if (!response.ok) throw await errorOf(response);
    return response;
  }
}

/**
 * The rows of one NDJSON answer, one at a time: `for await (const row of stream)`. The request
 * starts with the iteration; `header` resolves with the columns (and the size when known),
 * `footer` is set once the last row was read. Leaving the loop early closes the connection,
 * which cancels the statement if it still runs.
 */
export class RowStream<R extends Row = Row> implements AsyncIterable<R> {
  /** The first line: columns, statement id and, when the warehouse said it, the size. */
  readonly header: Promise<NdjsonHeader>;
  /** The last line, once the stream ended whole. */
  footer: NdjsonFooter | undefined;
  /** The response, once it arrived (its `Server-Timing`, `X-Request-ID`). */
  response: Response | undefined;
  readonly #open: () => Promise<Response>;
  readonly #bigint: boolean;
  #started = false;
  #settleHeader: { resolve: (h: NdjsonHeader) => void; reject: (e: unknown) => void } | undefined;

  constructor(open: () => Promise<Response>, bigint: boolean) {
    this.#open = open;
    this.#bigint = bigint;
    this.header = new Promise<NdjsonHeader>((resolve, reject) => {
      this.#settleHeader = { resolve, reject };
    });
    this.header.catch(() => undefined); // an unread header must not be an unhandled rejection
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<R> {
    if (this.#started) throw new Error("a RowStream can be read once");
    this.#started = true;
    let columns: Column[] | undefined;
    try {
      const response = await this.#open();
      this.response = response;
      if (response.body === null) throw new TypeError("the NDJSON answer has no body");
      for await (const line of ndjsonLines(response.body)) {
        if (Array.isArray(line)) {
          const row = this.#bigint && columns !== undefined ? longsAsBigInt<R>([line], columns)[0] : line;
          yield row as R;
        } else if (columns === undefined) {
          const header = line as NdjsonHeader;
          columns = header.columns;
          this.#settleHeader?.resolve(header);
        } else {
          const detail = envelope(line);
          if (detail !== undefined) throw new DbxError(response.status, detail);
          this.footer = line as NdjsonFooter;
        }
      }
      if (this.footer === undefined) throw new TypeError("the NDJSON stream ended without its last line");
    } catch (error) {
      this.#settleHeader?.reject(error);
      throw error;
    }
  }

  /** Every row, read to the end. */
  async toArray(): Promise<R[]> {
    const rows: R[] = [];
    for await (const row of this) rows.push(row);
    return rows;
  }
}

/** True while the statement has not ended (PENDING or RUNNING): poll again. */
export function isRunning(status: StatementStatus): status is StatementRunning {
  return status.state === "PENDING" || status.state === "RUNNING";
}

function namedPath(name: string): string {
  return `/api/queries/${encodeURIComponent(name)}`;
}

function statementPath(handle: string): string {
  return `/api/statements/${encodeURIComponent(handle)}`;
}

function cacheHeaders(options: RunOptions): Record<string, string> {
  return options.cache === undefined || options.cache === "default" ? {} : { "Cache-Control": options.cache };
}

function pick<T extends object>(values: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined)) as {
    [K in keyof T]: Exclude<T[K], undefined>;
  };
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    function onAbort(): void {
      clearTimeout(timer);
      reject(signal?.reason);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
