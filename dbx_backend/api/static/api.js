// Calls to this service's public API, with the API key the user gave (session storage only).

const KEY_NAME = "dbx-backend.api-key";
export const NDJSON = "application/x-ndjson";
export const JSON_TYPE = "application/json";

export function apiKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function setApiKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

export function forgetApiKey() {
  sessionStorage.removeItem(KEY_NAME);
}

// An answer other than 2xx: the error envelope's fields, the HTTP status and the request id.
export class ApiError extends Error {
  constructor(status, detail, requestId) {
    super(detail.message || `HTTP ${status}`);
    this.status = status;
    this.detail = { request_id: requestId, ...detail };
  }
}

// fetch() with the key and JSON body; resolves to the Response when it is 2xx, else throws ApiError.
export async function call(path, { method = "GET", body, accept = "application/json", signal } = {}) {
  const headers = { Accept: accept };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    // No `cache` mode: "no-store" would add `Cache-Control: no-cache`, which tells the
    // service's result cache to run the statement afresh.
  });
  if (response.ok) return response;
  throw await errorFrom(response);
}

async function errorFrom(response) {
  const requestId = response.headers.get("X-Request-ID") || undefined;
  const text = await response.text();
  let detail;
  try {
    detail = JSON.parse(text).error;
  } catch {
    detail = undefined;
  }
  if (!detail || typeof detail !== "object") {
    detail = { code: `HTTP_${response.status}`, message: text.slice(0, 500) || response.statusText };
  }
  return new ApiError(response.status, detail, requestId);
}

export async function getJson(path) {
  return (await call(path)).json();
}

export async function postJson(path, body) {
  return (await call(path, { method: "POST", body })).json();
}
