// The server side of the pattern the dbx-backend README recommends: the browser calls this web
// app's own route, and only the server knows where dbx-backend is and holds its API key.
//
// - the key comes from the server's environment (DBX_API_KEY) and never reaches the browser;
// - an answer's body is passed through as a stream, never buffered, so NDJSON rows reach the
//   page as dbx-backend writes them, whatever the size;
// - the browser's abort (`request.signal`: a closed tab, an AbortController) aborts the call to
//   dbx-backend, which cancels the statement on the warehouse.

/** The dbx-backend routes a page may reach through the proxy, and nothing else. */
const ALLOWED = /^(query|queries(\/[A-Za-z0-9_-]+)?|statements(\/[A-Za-z0-9_-]+(\/rows)?)?)$/;
const REQUEST_HEADERS = ["accept", "content-type", "cache-control", "if-none-match", "idempotency-key", "x-request-id"];
const ANSWER_HEADERS = [
  "content-type",
  "content-disposition",
  "server-timing",
  "x-request-id",
  "retry-after",
  "allow",
  "etag",
  "age",
  "cache-control",
];
const MAX_BODY_BYTES = 1024 * 1024;

export interface ProxyConfig {
  /** Where dbx-backend listens, e.g. http://dbx-backend:4000 (DBX_BACKEND_URL). */
  baseUrl: string;
  /** Its API key (DBX_API_KEY); undefined when it runs without keys. */
  apiKey: string | undefined;
}

/** The configuration from the server's environment, read per request (never at build time). */
export function configFromEnv(env: Record<string, string | undefined> = process.env): ProxyConfig {
  const baseUrl = env.DBX_BACKEND_URL ?? "http://localhost:4000";
  return { baseUrl, apiKey: env.DBX_API_KEY || undefined };
}

/** Forward `request` (for `/api/dbx/<path>`) to dbx-backend's `/api/<path>`, adding the key. */
export async function forward(request: Request, path: readonly string[], config: ProxyConfig): Promise<Response> {
  const route = path.join("/");
  if (!ALLOWED.test(route)) {
    return refusal(404, "NOT_FOUND", `no such dbx-backend route through this proxy: /${route}`);
  }
  const target = new URL(`/api/${route}`, config.baseUrl);
  target.search = new URL(request.url).search;
  const headers = new Headers();
  for (const name of REQUEST_HEADERS) {
    const value = request.headers.get(name);
    if (value !== null) headers.set(name, value);
  }
  if (config.apiKey !== undefined) headers.set("authorization", `Bearer ${config.apiKey}`);
  const init: RequestInit = { method: request.method, headers, signal: request.signal, redirect: "manual" };
  if (request.method !== "GET" && request.method !== "DELETE") {
    // Request bodies are small JSON documents: read whole, and bounded.
    const body = await request.arrayBuffer();
    if (body.byteLength > MAX_BODY_BYTES) {
      return refusal(413, "PAYLOAD_TOO_LARGE", `the request body is over ${MAX_BODY_BYTES} bytes`);
    }
    init.body = body;
  }
  let upstream: Response;
  try {
    upstream = await fetch(target, init);
  } catch (error) {
    if (request.signal.aborted) throw error; // the browser left: nothing to answer
    return refusal(502, "WAREHOUSE_UNAVAILABLE", "dbx-backend could not be reached", true);
  }
  const answer = new Headers();
  for (const name of ANSWER_HEADERS) {
    const value = upstream.headers.get(name);
    if (value !== null) answer.set(name, value);
  }
  // The body as a stream: each chunk goes on as it arrives (and the abort above stops it). It is
  // piped rather than handed on: undici cancels the body of a fetch Response that is garbage
  // collected while its stream is not locked, and `upstream` is dropped here, possibly long
  // before Next.js (or a test) starts reading.
  const body = upstream.body?.pipeThrough(new TransformStream<Uint8Array, Uint8Array>()) ?? null;
  return new Response(body, { status: upstream.status, headers: answer });
}

function refusal(status: number, code: string, message: string, retryable = false): Response {
  const error = { code, message, request_id: "", retryable };
  return Response.json({ error }, { status });
}
