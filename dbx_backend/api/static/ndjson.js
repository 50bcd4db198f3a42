// Reads the service's NDJSON result stream as it arrives: a header line {columns, statement_id},
// one JSON array per row, then a footer {row_count, truncated} or, on a failure after the first
// byte, an {error} line. Rows go to the sink in batches, one JSON.parse per run of row lines.

// The stream ended without a footer or an error line: the result is incomplete.
export class StreamCut extends Error {
  constructor() {
    super("the stream ended before its last line: the result is incomplete");
    this.detail = { code: "STREAM_CUT", message: this.message };
  }
}

// Parsing buffered data never waits, so without a pause the page would not paint until the
// whole stream was read: pause after the first rows until they are on screen, then every few ms.
const PAUSE_EVERY_MS = 12;
const SLICE_CHARS = 64 * 1024;
const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));
const nextPaint = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));

// sink: { header(line), rows(arrayOfRows), footer(line), error(detail) }
export async function readResultStream(body, sink) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const state = { header: false, ended: false, rows: 0 };
  let carry = "";
  let painted = false;
  let lastPause = performance.now();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const text = carry + value;
    const cut = text.lastIndexOf("\n");
    if (cut < 0) {
      carry = text;
      continue;
    }
    carry = text.slice(cut + 1);
    // A read may hand over megabytes at once: parse them a slice at a time.
    for (let from = 0; from < cut; ) {
      let to = from + SLICE_CHARS < cut ? text.indexOf("\n", from + SLICE_CHARS) : cut;
      if (to < 0 || to > cut) to = cut;
      readBlock(text.slice(from, to), state, sink);
      from = to + 1;
      if (!painted && state.rows > 0) {
        painted = true;
        await nextPaint();
        lastPause = performance.now();
      } else if (performance.now() - lastPause > PAUSE_EVERY_MS) {
        await nextTask();
        lastPause = performance.now();
      }
    }
  }
  if (carry.trim()) {
    try {
      readBlock(carry, state, sink);
    } catch {
      throw new StreamCut(); // a last line cut in the middle
    }
  }
  if (!state.ended) throw new StreamCut();
}

// `block` holds whole lines. JSON escapes newlines inside strings, so "\n{" always starts a line.
function readBlock(block, state, sink) {
  let start = 0;
  while (start < block.length) {
    if (!state.header || block[start] === "{") {
      let end = block.indexOf("\n", start);
      if (end < 0) end = block.length;
      const line = JSON.parse(block.slice(start, end));
      if (!state.header) {
        state.header = true;
        sink.header(line);
      } else if (line.error) {
        state.ended = true;
        sink.error(line.error);
      } else {
        state.ended = true;
        sink.footer(line);
      }
      start = end + 1;
      continue;
    }
    let end = block.indexOf("\n{", start);
    if (end < 0) end = block.length;
    const rows = JSON.parse(`[${block.slice(start, end).replaceAll("\n", ",")}]`);
    state.rows += rows.length;
    sink.rows(rows);
    start = end + 1;
  }
}
