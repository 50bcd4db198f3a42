/**
 * The lines of an NDJSON body, parsed, as they arrive. Reading stops (and the body is
 * cancelled, closing the connection) when the consumer stops early or `signal` aborts.
 */
export async function* ndjsonLines(body: ReadableStream<Uint8Array>): AsyncGenerator<unknown> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        finished = true;
        break;
      }
      pending += decoder.decode(value, { stream: true });
      let end = pending.indexOf("\n");
      while (end >= 0) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 1);
        if (line.trim() !== "") yield JSON.parse(line) as unknown;
        end = pending.indexOf("\n");
      }
    }
    pending += decoder.decode();
    if (pending.trim() !== "") yield JSON.parse(pending) as unknown;
  } finally {
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
