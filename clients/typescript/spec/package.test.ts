// `npm pack` gives a working package: installed from the tarball into an empty project (no
// network: it has no dependencies), it imports, type-checks under --strict and queries a live
// service.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { startDev, type DevService } from "./server.js";

const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const TSC = join(PACKAGE_DIR, "node_modules", "typescript", "bin", "tsc");
let dev: DevService;
let work: string;
let tarball: string;

function run(command: string, args: string[], cwd: string): string {
  return execFileSync(command, args, { cwd, encoding: "utf8", timeout: 120_000, stdio: "pipe" });
}

before(async () => {
  dev = await startDev();
  work = mkdtempSync(join(tmpdir(), "dbx-client-pack-"));
  const packed = JSON.parse(
    run("npm", ["pack", "--json", "--pack-destination", work, "--loglevel=error"], PACKAGE_DIR),
  ) as { filename: string; files: { path: string }[] }[];
  tarball = join(work, packed[0]?.filename ?? "");
});

after(async () => {
  await dev?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test("the tarball holds the build, its declarations and the API types, nothing else", () => {
  const listing = run("tar", ["-tzf", tarball], work).split("\n").filter(Boolean);

  for (const file of ["package/dist/index.js", "package/dist/index.d.ts", "package/api.d.ts"]) {
    assert.ok(listing.includes(file), `${file} is missing from ${listing.join(", ")}`);
  }
  assert.deepEqual(
    listing.filter((f) => f.startsWith("package/src/") || f.startsWith("package/spec/")),
    [],
  );
});

test("installed from the tarball, it type-checks and queries the service", () => {
  const project = join(work, "consumer");
  run("mkdir", ["-p", project], work);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", tarball], project);
  writeFileSync(
    join(project, "main.ts"),
    [
      'import { DbxClient, DbxError, type StatementStatus } from "dbx-backend-client";',
      "const client = new DbxClient({ baseUrl: process.argv[2] ?? '', bigint: true });",
      "const { rows, columns } = await client.query<[bigint, string]>(\"SELECT CAST(9007199254740993 AS BIGINT) AS n, 'ok' AS s\");",
      "const check = (s: StatementStatus): string => (s.state === 'SUCCEEDED' ? String(s.rows.length) : s.state);",
      "void check; void DbxError;",
      "console.log(JSON.stringify({ n: String(rows[0]?.[0]), s: rows[0]?.[1], type: columns[0]?.type }));",
    ].join("\n"),
  );
  writeFileSync(
    join(project, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        target: "ES2022",
        module: "NodeNext",
        moduleResolution: "NodeNext",
        lib: ["ES2022", "DOM"],
        types: [],
        outDir: "out",
        skipLibCheck: false,
      },
      files: ["main.ts", "node.d.ts"],
    }),
  );
  // The consumer needs `process` only for its argument; a line instead of @types/node.
  writeFileSync(join(project, "node.d.ts"), "declare const process: { argv: string[] };\n");

  run("node", [TSC, "-p", "tsconfig.json"], project);
  const printed = run("node", [join(project, "out", "main.js"), dev.url], project);

  assert.deepEqual(JSON.parse(printed), { n: "9007199254740993", s: "ok", type: "LONG" });
  const installed = JSON.parse(
    readFileSync(join(project, "node_modules", "dbx-backend-client", "package.json"), "utf8"),
  ) as { dependencies?: object };
  assert.equal(installed.dependencies, undefined); // nothing at run time but fetch
});
