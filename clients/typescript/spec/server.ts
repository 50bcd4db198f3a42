// A live `dbx-backend dev` (the service on its embedded local warehouse) for the tests, on
// free loopback ports, stopped when they end. Bounded: it must answer /health within 60 s.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root: the nearest folder above this file holding pyproject.toml. */
export const REPO = repositoryRoot(dirname(fileURLToPath(import.meta.url)));
const START_LIMIT_MS = 60_000;

export interface DevService {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** The local warehouse, reachable with `warehouseToken`. */
  warehouseUrl: string;
  warehouseToken: string;
  /** Everything the process printed so far (its log). */
  output(): string;
  /** Wait (bounded) until the log shows `pattern`; its match. */
  waitForLog(pattern: RegExp, withinMs?: number): Promise<RegExpMatchArray>;
  stop(): Promise<void>;
}

function repositoryRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "pyproject.toml")) && existsSync(join(dir, "dbx_backend"))) return dir;
    if (dirname(dir) === dir) throw new Error(`no repository above ${start}`);
  }
}

export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? done(address.port) : fail(new Error("no port"))));
    });
  });
}

/** The environment of the service: this one without API keys, the repository's named queries,
 * INFO logs (the tests read the warehouse's), then `extra`. */
function serviceEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.API_KEYS;
  delete env.API_KEYS_FILE;
  return {
    ...env,
    NO_PROXY: "127.0.0.1,localhost",
    QUERIES_DIR: resolve(REPO, "queries"),
    LOG_LEVEL: "INFO",
    ...extra,
  };
}

/** Start `dbx-backend dev`; `env` adds to (or overrides) the service's settings. A port taken
 * between choosing it and binding it (other programs run on this machine) means a new try. */
export async function startDev(env: Record<string, string> = {}): Promise<DevService> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await startDevOnce(env);
    } catch (error) {
      if (attempt === 3 || !String(error).includes("address already in use")) throw error;
    }
  }
}

async function startDevOnce(env: Record<string, string>): Promise<DevService> {
  const [port, warehousePort] = [await freePort(), await freePort()];
  const warehouseToken = `dapi-client-tests-${port}`;
  const command = process.env.DBX_BACKEND ?? resolve(REPO, ".venv/bin/dbx-backend");
  const child: ChildProcess = spawn(
    command,
    ["dev", "--host", "127.0.0.1", "--port", String(port), "--warehouse-port", String(warehousePort), "--token", warehouseToken],
    {
      cwd: REPO,
      env: serviceEnv(env),
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let log = "";
  child.stdout?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  const url = `http://127.0.0.1:${port}`;
  const service: DevService = {
    url,
    warehouseUrl: `http://127.0.0.1:${warehousePort}`,
    warehouseToken,
    output: () => log,
    async waitForLog(pattern, withinMs = 10_000) {
      for (const started = Date.now(); Date.now() - started < withinMs; ) {
        const match = log.match(pattern);
        if (match) return match;
        await delay(50);
      }
      throw new Error(`the log never showed ${pattern}:\n${log}`);
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((done) => child.once("exit", done));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
  for (const started = Date.now(); ; ) {
    if (child.exitCode !== null) throw new Error(`dbx-backend dev exited with ${child.exitCode}:\n${log}`);
    try {
      if ((await fetch(`${url}/health`)).ok) return service;
    } catch {
      // not listening yet
    }
    if (Date.now() - started > START_LIMIT_MS) {
      await service.stop();
      throw new Error(`dbx-backend dev did not answer /health within ${START_LIMIT_MS} ms:\n${log}`);
    }
    await delay(100);
  }
}

/** The local warehouse's own view of a statement (the Statement Execution API). */
export async function warehouseState(service: DevService, statementId: string): Promise<string> {
  const response = await fetch(`${service.warehouseUrl}/api/2.0/sql/statements/${statementId}`, {
    headers: { Authorization: `Bearer ${service.warehouseToken}` },
  });
  const body = (await response.json()) as { status?: { state?: string } };
  return body.status?.state ?? `HTTP ${response.status}`;
}

/** Poll `check` every 50 ms until it is true; false after `withinMs`. */
export async function eventually(check: () => Promise<boolean>, withinMs = 10_000): Promise<boolean> {
  for (const started = Date.now(); Date.now() - started < withinMs; ) {
    if (await check()) return true;
    await delay(50);
  }
  return check();
}

export function delay(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}

/**
 * Run full garbage collections and let finalizers run: undici cancels the body of a fetch
 * Response that is collected unread, so a stream handed on without its Response must survive
 * this. Needs `node --expose-gc` (scripts/test-typescript passes it); without it, it throws.
 */
export async function collectGarbage(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run node with --expose-gc");
  for (let round = 0; round < 3; round += 1) {
    gc();
    await delay(10);
  }
}
