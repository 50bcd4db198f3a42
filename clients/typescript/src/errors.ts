import type { ErrorCode, ErrorDetail, StatementState } from "./types.js";

/** An error answer of the service: the HTTP status and the `{"error": {...}}` envelope. */
export class DbxError extends Error {
  override readonly name = "DbxError";
  /** The HTTP status; 200 for an error that ended an NDJSON stream after it began. */
  readonly status: number;
  readonly code: ErrorCode;
  readonly requestId: string;
  readonly retryable: boolean;
  readonly statementId: string | undefined;
  readonly sqlState: string | undefined;
  /** The request field at fault, when one is. */
  readonly field: string | undefined;
  /** STATEMENT_NOT_READY: where the statement is. */
  readonly state: StatementState | undefined;
  /** Seconds the service asked to wait before a retry (`Retry-After`), when it did. */
  readonly retryAfterS: number | undefined;
  readonly detail: ErrorDetail;

  constructor(status: number, detail: ErrorDetail, retryAfterS?: number) {
    super(detail.message);
    this.status = status;
    this.detail = detail;
    this.code = detail.code;
    this.requestId = detail.request_id;
    this.retryable = detail.retryable;
    this.statementId = detail.statement_id ?? undefined;
    this.sqlState = detail.sql_state ?? undefined;
    this.field = detail.field ?? undefined;
    this.state = detail.state;
    this.retryAfterS = retryAfterS;
  }
}

/** The error a non-2xx response carries (never throws itself). */
export async function errorOf(response: Response): Promise<DbxError> {
  const retryAfter = Number(response.headers.get("Retry-After"));
  const wait = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined;
  let detail: ErrorDetail | undefined;
  try {
    const body: unknown = await response.json();
    detail = envelope(body);
  } catch {
    detail = undefined; // not JSON: a proxy's page, a cut body
  }
  return new DbxError(
    response.status,
    detail ?? {
      code: "INTERNAL_ERROR",
      message: `HTTP ${response.status} without the service's error envelope`,
      request_id: response.headers.get("X-Request-ID") ?? "",
      retryable: response.status === 502 || response.status === 503 || response.status === 504,
    },
    wait,
  );
}

/** `{"error": {...}}` → its detail, when `body` has that shape. */
export function envelope(body: unknown): ErrorDetail | undefined {
  if (typeof body !== "object" || body === null || !("error" in body)) return undefined;
  const error = (body as { error: unknown }).error;
  if (typeof error !== "object" || error === null) return undefined;
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code !== "string" || typeof message !== "string") return undefined;
  return error as ErrorDetail;
}
