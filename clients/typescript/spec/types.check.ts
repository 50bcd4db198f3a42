// Type tests: compiled with `tsc --strict` (tsconfig.spec.json), never run. Each
// `@ts-expect-error` line must fail to compile, or the build fails: so a typo in a state, an
// error code or a column type is caught by the compiler, not at run time.
import type {
  Cell,
  Column,
  DbxClient,
  DbxError,
  ErrorCode,
  StatementOutcome,
  StatementStatus,
} from "../src/index.js";

export function statusNarrowsOnState(status: StatementStatus): number {
  // @ts-expect-error: "SUCCEDED" is not a state
  if (status.state === "SUCCEDED") return 0;
  if (status.state === "SUCCEEDED") {
    const rows: readonly (readonly Cell[])[] = status.rows;
    const next: number | null = status.next_offset;
    return rows.length + (next ?? 0) + status.columns.length;
  }
  if (status.state === "FAILED") {
    const code: ErrorCode = status.error.code;
    return code.length;
  }
  if (status.state === "RUNNING" || status.state === "PENDING") {
    // @ts-expect-error: a running statement has no rows yet
    void status.rows;
    return status.elapsed_ms;
  }
  // Only CANCELED and CLOSED are left.
  const ended: "CANCELED" | "CLOSED" = status.state;
  return ended.length;
}

export function errorCodesAreAUnion(error: DbxError): boolean {
  // @ts-expect-error: "SQL_EROR" is not an error code
  if (error.code === "SQL_EROR") return false;
  return error.code === "SQL_ERROR" || error.code === "STATEMENT_NOT_READY";
}

export function columnTypesAreAUnion(column: Column): string {
  // @ts-expect-error: the API says LONG, never BIGINT
  const wrong: Column["type"] = "BIGINT";
  const right: Column["type"] = "LONG";
  // @ts-expect-error: json_type is one of a few words
  const shape: Column["json_type"] = "integer";
  return `${wrong}${right}${shape}${column.json_type}`;
}

export async function outcomesAreTerminal(client: DbxClient, handle: string): Promise<string> {
  const outcome: StatementOutcome = await client.waitFor(handle);
  // @ts-expect-error: waitFor never resolves to a running state
  if (outcome.state === "RUNNING") return "never";
  return outcome.state;
}

export async function optionsAreChecked(client: DbxClient): Promise<void> {
  // @ts-expect-error: the disposition is INLINE or EXTERNAL_LINKS
  await client.query("SELECT 1", { disposition: "INLINED" });
  // @ts-expect-error: cache modes are Cache-Control directives
  await client.query("SELECT 1", { cache: "reload" });
  await client.submit("SELECT 1", { waitS: 5, idempotencyKey: "k" });
}
