// The client against a live `dbx-backend dev` started here: real HTTP over loopback, the local
// warehouse behind it. Every wait is bounded.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { DbxClient, DbxError, isRunning, type Row, type StatementStatus } from "../src/index.js";
import { delay, eventually, startDev, warehouseState, type DevService } from "./server.js";

let dev: DevService;
let client: DbxClient;

before(async () => {
  dev = await startDev();
  client = new DbxClient({ baseUrl: dev.url });
});

after(async () => {
  await dev?.stop();
});

const NESTED =
  "SELECT CAST(9007199254740993 AS BIGINT) AS n, " +
  "NAMED_STRUCT('id', CAST(9007199254740993 AS BIGINT), 'price', CAST(1.10 AS DECIMAL(10,2))) AS s, " +
  "ARRAY(CAST(-9223372036854775808 AS BIGINT)) AS a, MAP(CAST(1 AS BIGINT), 'x') AS m";

describe("query", () => {
  test("returns the columns, typed rows and the answer's timing", async () => {
    const result = await client.query<[number, string]>("SELECT 1 AS one, 'x' AS s");

    assert.deepEqual(result.rows, [[1, "x"]]);
    assert.deepEqual(
      result.columns.map((c) => [c.name, c.type, c.json_type]),
      [
        ["one", "INT", "number"],
        ["s", "STRING", "string"],
      ],
    );
    assert.match(result.serverTiming ?? "", /wait;dur=/);
    assert.ok(result.requestId);
  });

  test("with bigint, LONGs are exact bigints at every depth and DECIMALs keep their scale", async () => {
    const exact = new DbxClient({ baseUrl: dev.url, bigint: true });

    const { rows } = await exact.query(NESTED);

    assert.deepEqual(rows, [
      [
        9007199254740993n,
        { id: 9007199254740993n, price: "1.10" },
        [-9223372036854775808n],
        [{ key: 1n, value: "x" }],
      ],
    ]);
  });

  test("with long_as_string, LONGs are exact strings and json_type says so", async () => {
    const { rows, columns } = await client.query(NESTED, { longAsString: true });

    assert.deepEqual(rows[0]?.slice(0, 2), ["9007199254740993", { id: "9007199254740993", price: "1.10" }]);
    assert.equal(columns[0]?.json_type, "string");
  });

  test("a SQL error is a DbxError with the code, status and request id", async () => {
    const error = await client.query("SELECT * FROM no_such_table").catch((e: unknown) => e);

    assert.ok(error instanceof DbxError);
    assert.equal(error.code, "SQL_ERROR");
    assert.equal(error.status, 400);
    assert.equal(error.retryable, false);
    assert.ok(error.requestId);
  });

  test("a refused write is STATEMENT_NOT_ALLOWED", async () => {
    const error = await client.query("DROP TABLE samples.nyctaxi.trips").catch((e: unknown) => e);

    assert.ok(error instanceof DbxError);
    assert.equal(error.code, "STATEMENT_NOT_ALLOWED");
    assert.equal(error.status, 403);
  });
});

describe("stream", () => {
  test("yields the same rows as query, one at a time, with header and footer", async () => {
    const sql = "SELECT id, id * 2 AS twice FROM range(2500) AS t(id) ORDER BY id";
    const whole = await client.query(sql);

    const stream = client.stream<[number, number]>(sql, { cache: "no-cache" });
    const rows: [number, number][] = [];
    for await (const row of stream) rows.push(row);
    const header = await stream.header;

    assert.deepEqual(rows, whole.rows);
    assert.deepEqual(header.columns, whole.columns);
    assert.equal(header.total_row_count, 2500);
    assert.equal(stream.footer?.row_count, 2500);
    assert.match(stream.footer?.server_timing ?? "", /fetch;dur=/);
    assert.match(stream.response?.headers.get("Server-Timing") ?? "", /^wait;dur=/);
  });

  test("with bigint, streamed LONGs are bigints too", async () => {
    const exact = new DbxClient({ baseUrl: dev.url, bigint: true });

    const rows = await exact.stream(NESTED).toArray();

    assert.equal(rows[0]?.[0], 9007199254740993n);
  });

  test("an AbortSignal stops the stream mid-way", async () => {
    const controller = new AbortController();
    const stream = client.stream("SELECT id, repeat('x', 500) AS pad FROM range(200000) AS t(id)", {
      signal: controller.signal,
    });
    let seen = 0;

    const ended = await (async () => {
      for await (const _row of stream) {
        seen += 1;
        if (seen === 10) controller.abort();
      }
    })().catch((e: unknown) => e);

    assert.ok(ended instanceof Error);
    assert.equal(ended.name, "AbortError");
    assert.ok(seen >= 10 && seen < 200000);
  });

  test("leaving the loop early closes the stream", async () => {
    const rows: Row[] = [];
    for await (const row of client.stream("SELECT id FROM range(100000) AS t(id)")) {
      rows.push(row);
      if (rows.length === 3) break;
    }

    assert.deepEqual(rows, [[0], [1], [2]]);
  });

  test("a stream that fails before its first line is a DbxError", async () => {
    const error = await client
      .stream("SELECT * FROM no_such_table")
      .toArray()
      .catch((e: unknown) => e);

    assert.ok(error instanceof DbxError);
    assert.equal(error.code, "SQL_ERROR");
  });
});

describe("long statements", () => {
  test("submit, waitFor and pages read the whole result", async () => {
    const submitted = await client.submit("SELECT id FROM range(2500) AS t(id) ORDER BY id");

    const outcome = await client.waitFor(submitted.statement_id, { timeoutMs: 30_000, initialDelayMs: 20 });
    const pages: Row[][] = [];
    for await (const page of client.pages(submitted.statement_id, { pageSize: 1000 })) pages.push(page);

    assert.equal(outcome.state, "SUCCEEDED");
    assert.deepEqual(
      pages.map((p) => p.length),
      [1000, 1000, 500],
    );
    assert.deepEqual(
      pages.flat().map((row) => row[0]),
      Array.from({ length: 2500 }, (_, i) => i),
    );
  });

  test("wait_s answers a quick statement already SUCCEEDED", async () => {
    const submitted = await client.submit("SELECT 42 AS answer", { waitS: 5 });

    assert.equal(submitted.state, "SUCCEEDED");
    const status = await client.status(submitted.statement_id);
    assert.equal(status.state, "SUCCEEDED");
    if (status.state === "SUCCEEDED") assert.deepEqual(status.rows, [[42]]);
  });

  test("a running statement reports elapsed_ms, refuses its rows with 409, and cancels", async () => {
    const { statement_id: handle } = await client.submit("SELECT sleep_ms(20000) AS slept");

    let status: StatementStatus = await client.status(handle);
    for (let i = 0; i < 200 && status.state === "PENDING"; i += 1) status = await client.status(handle);
    const rows = await client
      .pages(handle, { timeoutMs: 1 })
      .next()
      .catch((e: unknown) => e);
    const early = await fetch(`${dev.url}/api/statements/${handle}/rows`);
    await client.cancel(handle);
    const outcome = await client.waitFor(handle, { timeoutMs: 10_000, initialDelayMs: 20 });

    assert.ok(isRunning(status));
    assert.equal(status.state, "RUNNING");
    assert.ok(status.elapsed_ms >= 0);
    assert.ok(rows instanceof DOMException);
    assert.equal(rows.name, "TimeoutError");
    assert.equal(early.status, 409);
    const body = (await early.json()) as { error: { code: string; state: string } };
    assert.deepEqual([body.error.code, body.error.state], ["STATEMENT_NOT_READY", "RUNNING"]);
    assert.equal(outcome.state, "CANCELED");
  });

  test("a failed statement ends FAILED with its error; its pages throw it", async () => {
    const { statement_id: handle } = await client.submit("SELECT * FROM nowhere_at_all");

    const outcome = await client.waitFor(handle, { timeoutMs: 10_000, initialDelayMs: 20 });
    const pageError = await client
      .pages(handle)
      .next()
      .catch((e: unknown) => e);

    assert.equal(outcome.state, "FAILED");
    if (outcome.state === "FAILED") assert.equal(outcome.error.code, "SQL_ERROR");
    assert.ok(pageError instanceof DbxError);
    assert.equal(pageError.code, "SQL_ERROR");
  });

  test("an unknown handle is a 404 NOT_FOUND", async () => {
    const error = await client.status("not-a-handle").catch((e: unknown) => e);

    assert.ok(error instanceof DbxError);
    assert.deepEqual([error.status, error.code], [404, "NOT_FOUND"]);
  });

  test("the same Idempotency-Key gives the same handle", async () => {
    const key = `key-${Date.now()}`;

    const first = await client.submit("SELECT 7 AS seven", { idempotencyKey: key });
    const again = await client.submit("SELECT 7 AS seven", { idempotencyKey: key });

    assert.equal(again.statement_id, first.statement_id);
  });
});

describe("named queries", () => {
  test("are listed with their parameters", async () => {
    const { queries } = await client.listQueries();

    const names = queries.map((q) => q.name);
    assert.ok(names.includes("trips_by_zip"));
    const zip = queries.find((q) => q.name === "trips_by_zip")?.params.find((p) => p.name === "zip");
    assert.equal(zip?.required, true);
  });

  test("run with their parameters, buffered and streamed alike", async () => {
    const buffered = await client.runQuery("trips_by_zip", { zip: 10001, limit: 5 });
    const streamed = await client.streamQuery("trips_by_zip", { zip: 10001, limit: 5 }).toArray();

    assert.ok(buffered.rows.length > 0 && buffered.rows.length <= 5);
    assert.deepEqual(streamed, buffered.rows);
  });

  test("a missing parameter is INVALID_PARAMS naming it", async () => {
    const error = await client.runQuery("trips_by_zip", {}).catch((e: unknown) => e);

    assert.ok(error instanceof DbxError);
    assert.equal(error.code, "INVALID_PARAMS");
    assert.equal(error.field, "params.zip");
  });
});

describe("the warehouse sees what the client did", () => {
  test("a stream abandoned while the statement runs leaves it CANCELED", async () => {
    const controller = new AbortController();
    const stream = client.stream("SELECT sleep_ms(20000) AS slept", { signal: controller.signal });
    const reading = stream.toArray().catch((e: unknown) => e);

    await delay(500); // submitted, and running on the warehouse
    controller.abort();
    const ended = await reading;
    const [, id = ""] = await dev.waitForLog(/cancel of statement (\S+) requested while RUNNING/);

    assert.ok(ended instanceof Error && ended.name === "AbortError");
    assert.ok(await eventually(async () => (await warehouseState(dev, id)) === "CANCELED"));
  });
});
