// The example's route handler, called as Next calls it (a web Request, a params promise),
// against a live `dbx-backend dev` that requires an API key. Every wait is bounded.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  collectGarbage,
  delay,
  eventually,
  startDev,
  warehouseState,
  type DevService,
} from "../../../clients/typescript/spec/server.ts";
import { DELETE, GET, POST } from "../app/api/dbx/[...path]/route.ts";

const KEY = "example-server-side-key-0123456789";
let dev: DevService;

before(async () => {
  dev = await startDev({ API_KEYS: KEY });
  process.env.DBX_BACKEND_URL = dev.url;
  process.env.DBX_API_KEY = KEY;
});

after(async () => {
  await dev?.stop();
});

const HANDLERS = { GET, POST, DELETE };

function call(
  method: keyof typeof HANDLERS,
  path: string,
  init: { body?: unknown; headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<Response> {
  const request = new Request(`http://localhost:3000/api/dbx/${path}`, {
    method,
    headers: { "content-type": "application/json", ...init.headers },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
    ...(init.signal === undefined ? {} : { signal: init.signal }),
  });
  const route = path.split("?")[0] ?? "";
  return HANDLERS[method](request, { params: Promise.resolve({ path: route.split("/") }) });
}

test("the handler adds the server's key: the browser never holds it", async () => {
  const direct = await fetch(`${dev.url}/api/query`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ sql: "SELECT 1 AS one" }),
  });

  const proxied = await call("POST", "query", { body: { sql: "SELECT 1 AS one" } });

  assert.equal(direct.status, 401);
  assert.equal(proxied.status, 200);
  assert.deepEqual(((await proxied.json()) as { rows: unknown }).rows, [[1]]);
  assert.match(proxied.headers.get("server-timing") ?? "", /wait;dur=/);
  assert.ok(proxied.headers.get("x-request-id"));
});

test("an NDJSON answer streams through, line by line, and stops with the browser", async () => {
  const controller = new AbortController();
  const response = await call("POST", "query", {
    body: { sql: "SELECT id, repeat('x', 1000) AS pad FROM range(300000) AS t(id)" },
    headers: { accept: "application/x-ndjson" },
    signal: controller.signal,
  });
  assert.equal(response.headers.get("content-type")?.split(";")[0], "application/x-ndjson");
  const reader = response.body?.getReader();
  assert.ok(reader);

  const first = await reader.read();
  controller.abort(); // the tab closes after the first rows
  const rest = await (async () => {
    for (let i = 0; i < 100_000; i += 1) if ((await reader.read()).done) return "ended";
    return "still reading";
  })().catch((e: unknown) => e);

  assert.match(new TextDecoder().decode(first.value).split("\n")[0] ?? "", /^\{"columns":/);
  // A buffered body would have ended whole; the passed-through one fails with the abort.
  assert.ok(rest instanceof Error, `the body ${String(rest)} after the abort`);
});

test("a browser abort while the statement runs cancels it on the warehouse", async () => {
  const controller = new AbortController();
  const answer = call("POST", "query", {
    body: { sql: "SELECT sleep_ms(20000) AS slept" },
    headers: { accept: "application/x-ndjson" },
    signal: controller.signal,
  }).catch((e: unknown) => e);

  await delay(500); // submitted, and running on the warehouse
  controller.abort();
  const ended = await answer;
  const [, statementId = ""] = await dev.waitForLog(/cancel of statement (\S+) requested while RUNNING/);

  assert.ok(ended instanceof Error && ended.name === "AbortError");
  assert.ok(await eventually(async () => (await warehouseState(dev, statementId)) === "CANCELED"));
});

test("the statements API goes through too: submit, poll, page, cancel", async () => {
  const submitted = (await (
    await call("POST", "statements", { body: { sql: "SELECT id FROM range(30) AS t(id)", wait_s: 5 } })
  ).json()) as { statement_id: string; state: string };
  const status = await call("GET", `statements/${submitted.statement_id}?limit=10`);
  const page = await call("GET", `statements/${submitted.statement_id}/rows?offset=10&limit=10`);
  const cancel = await call("DELETE", `statements/${submitted.statement_id}`);

  assert.equal(submitted.state, "SUCCEEDED");
  assert.equal(((await status.json()) as { rows: unknown[] }).rows.length, 10);
  assert.deepEqual(((await page.json()) as { offset: number }).offset, 10);
  assert.equal(cancel.status, 202);
});

test("an answer read after a garbage collection is whole", async () => {
  const response = await call("POST", "query", { body: { sql: "SELECT id FROM range(1000) AS t(id)" } });
  await collectGarbage(); // the handler's fetch Response is gone; its body must not be

  assert.equal(((await response.json()) as { rows: unknown[] }).rows.length, 1000);
});

test("only dbx-backend's API routes are reachable through the handler", async () => {
  for (const path of ["health", "metrics", "..%2Fhealth", "statements/x/rows/more", "openapi.json"]) {
    const response = await call("GET", path);

    assert.equal(response.status, 404, path);
    assert.equal(((await response.json()) as { error: { code: string } }).error.code, "NOT_FOUND");
  }
});

test("errors keep the service's envelope and status", async () => {
  const response = await call("POST", "query", { body: { sql: "SELECT * FROM nowhere" } });

  assert.equal(response.status, 400);
  assert.equal(((await response.json()) as { error: { code: string } }).error.code, "SQL_ERROR");
});
