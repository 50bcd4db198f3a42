// The dev console: SQL editor, sample tables, named queries, and a streamed, virtualized result.
// Everything goes through the service's public API, as a front end's own code would.

import { ApiError, JSON_TYPE, NDJSON, apiKey, call, forgetApiKey, getJson, postJson, setApiKey } from "./api.js";
import { Grid } from "./grid.js";
import { readResultStream } from "./ndjson.js";
import { parseServerTiming } from "./timing.js";

const TABLES_SQL =
  "SELECT table_catalog, table_schema, table_name FROM system.information_schema.tables " +
  "WHERE table_schema <> 'information_schema' ORDER BY 1, 2, 3 LIMIT 500";
const $ = (id) => document.getElementById(id);
const grid = new Grid($("grid"));
const run = { controller: null, started: 0, timer: 0 };

function quoteName(name) {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : `\`${name.replaceAll("`", "``")}\``;
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function ms(value) {
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
}

function chip(text, title = "") {
  const element = document.createElement("span");
  element.className = "chip";
  element.textContent = text;
  element.title = title;
  return element;
}

// ---- errors ------------------------------------------------------------------------------

function showError(detail, status) {
  const box = $("error");
  if (!detail) {
    box.hidden = true;
    return;
  }
  $("error-code").textContent = detail.code || "ERROR";
  $("error-message").textContent = detail.message || "";
  $("error-status").textContent = status ? String(status) : "– (after the first byte)";
  $("error-request-id").textContent = detail.request_id || "–";
  $("error-statement-id").textContent = detail.statement_id || "–";
  const extra = [];
  if (detail.sql_state) extra.push(`sql_state ${detail.sql_state}`);
  if (detail.field) extra.push(`field ${detail.field}`);
  if (detail.retryable !== undefined) extra.push(`retryable ${detail.retryable}`);
  $("error-details").textContent = extra.join(" · ") || "–";
  box.hidden = false;
}

function handleCallError(error, note) {
  if (error instanceof ApiError && error.status === 401) {
    openKeyDialog();
  }
  note.textContent = error instanceof ApiError ? `${error.detail.code}: ${error.detail.message}` : String(error);
}

// ---- running a statement -----------------------------------------------------------------

function timingChip(entry) {
  if (entry.dur === undefined) return chip(`${entry.name}: ${entry.desc || "yes"}`);
  return chip(`${entry.name} ${ms(entry.dur)}`, entry.desc || "");
}

// `age` is the response's Age header: how old a cached answer is, in seconds.
function showServerTiming(header, footer, age) {
  // A stream's footer has the whole timing; its header (sent before the rows) only the wait,
  // and what the footer does not repeat (the cache outcome).
  const entries = footer ? parseServerTiming(footer) : [];
  const inFooter = new Set(entries.map((e) => e.name));
  entries.unshift(...parseServerTiming(header).filter((e) => !inFooter.has(e.name)));
  const others = entries.filter((e) => e.name !== "cache");
  $("server-timing").replaceChildren(...(others.length ? others.map(timingChip) : [chip("–")]));
  const cache = entries.find((e) => e.name === "cache");
  $("cache-box").hidden = !cache;
  if (cache) {
    const outcome = cache.desc || "yes";
    $("cache-outcome").textContent = outcome;
    $("cache-outcome").dataset.outcome = outcome;
    $("cache-age").textContent = age !== null && age !== undefined ? `age ${age} s` : "";
  }
}

function showBrowserTiming(marks) {
  const parts = [];
  if (marks.headers !== undefined) parts.push(chip(`headers ${ms(marks.headers)}`, "until the response headers arrived"));
  if (marks.firstRow !== undefined) parts.push(chip(`first row ${ms(marks.firstRow)}`, "until the first row was painted"));
  if (marks.done !== undefined) parts.push(chip(`last byte ${ms(marks.done)}`, "until the whole answer had arrived"));
  $("browser-timing").replaceChildren(...(parts.length ? parts : [chip("–")]));
  const gridElement = $("grid");
  for (const [name, value] of Object.entries(marks)) gridElement.dataset[`${name}Ms`] = value.toFixed(1);
}

function resetResult() {
  grid.clear();
  showError(null);
  $("row-count").textContent = "–";
  $("statement-id").textContent = "–";
  $("request-id").textContent = "–";
  showServerTiming("");
  showBrowserTiming({});
  for (const key of Object.keys($("grid").dataset)) delete $("grid").dataset[key];
}

function setRunning(running) {
  $("run").disabled = running;
  $("cancel").disabled = !running;
  for (const button of document.querySelectorAll(".named-run")) button.disabled = running;
  clearInterval(run.timer);
  if (running) {
    run.timer = setInterval(() => {
      const rows = grid.rowCount ? `, ${grid.rowCount.toLocaleString("en-US")} rows` : "";
      setStatus("running", `Running… ${((performance.now() - run.started) / 1000).toFixed(1)} s${rows}`);
    }, 100);
  }
}

// POST `path` and show the answer: streamed from NDJSON, or the whole JSON answer at once.
async function runQuery(path, body, label) {
  if (run.controller) return;
  resetResult();
  const controller = new AbortController();
  const marks = {};
  run.controller = controller;
  run.started = performance.now();
  setRunning(true);
  setStatus("running", `Running ${label}…`);
  grid.onFirstRow = (at) => {
    marks.firstRow = at - run.started;
    showBrowserTiming(marks);
  };
  let outcome = { state: "done" };
  const format = $("format").value;
  try {
    const accept = format === "json" ? JSON_TYPE : NDJSON;
    const response = await call(path, { method: "POST", body, accept, signal: controller.signal });
    marks.headers = performance.now() - run.started;
    $("request-id").textContent = response.headers.get("X-Request-ID") || "–";
    const serverTiming = response.headers.get("Server-Timing");
    const age = response.headers.get("Age");
    showServerTiming(serverTiming, "", age);
    if (format === "json") {
      const answer = await response.json();
      marks.firstRowReceived = performance.now() - run.started;
      grid.setColumns(answer.columns);
      grid.append(answer.rows);
      $("statement-id").textContent = answer.statement_id || "–";
      const truncated = answer.truncated ? " (truncated)" : "";
      $("row-count").textContent = `${answer.row_count.toLocaleString("en-US")}${truncated}`;
    } else {
      await readResultStream(response.body, {
        header(line) {
          grid.setColumns(line.columns);
          $("statement-id").textContent = line.statement_id || "–";
        },
        rows(rows) {
          marks.firstRowReceived ??= performance.now() - run.started;
          grid.append(rows);
        },
        footer(line) {
          const truncated = line.truncated ? " (truncated)" : "";
          $("row-count").textContent = `${line.row_count.toLocaleString("en-US")}${truncated}`;
          if (typeof line.server_timing === "string") showServerTiming(serverTiming, line.server_timing, age);
        },
        error(detail) {
          outcome = { state: "failed" };
          showError(detail);
        },
      });
    }
  } catch (error) {
    if (controller.signal.aborted) {
      outcome = { state: "cancelled" };
    } else {
      outcome = { state: "failed" };
      if (error instanceof ApiError) {
        showError(error.detail, error.status);
        if (error.status === 401) openKeyDialog();
      } else {
        showError(error.detail || { code: "NETWORK_ERROR", message: String(error.message || error) });
      }
    }
  } finally {
    marks.done = performance.now() - run.started;
    run.controller = null;
    setRunning(false);
  }
  showBrowserTiming(marks);
  const rows = grid.rowCount.toLocaleString("en-US");
  const took = ms(marks.done);
  if (outcome.state === "done") {
    setStatus("done", `Done: ${rows} rows in ${took}`);
  } else if (outcome.state === "cancelled") {
    $("row-count").textContent = `${rows} (cancelled)`;
    setStatus("cancelled", `Cancelled after ${took}: request aborted; a statement still running is cancelled`);
  } else {
    if (grid.rowCount) $("row-count").textContent = `${rows} (incomplete)`;
    setStatus("failed", `Failed after ${took}`);
  }
}

function runEditor() {
  const sql = $("sql").value;
  if (!sql.trim()) {
    setStatus("idle", "Type a statement first.");
    return;
  }
  const body = { sql };
  if ($("long-as-string").checked) body.long_as_string = true;
  runQuery("/api/query", body, "the statement");
}

// ---- tables --------------------------------------------------------------------------------

async function loadTables() {
  const note = $("tables-note");
  const list = $("table-list");
  note.textContent = "Loading…";
  list.replaceChildren();
  try {
    const result = await postJson("/api/query", { sql: TABLES_SQL });
    const bySchema = new Map();
    for (const [catalog, schema, table] of result.rows) {
      const key = `${catalog}.${schema}`;
      if (!bySchema.has(key)) bySchema.set(key, []);
      bySchema.get(key).push([catalog, schema, table]);
    }
    for (const [schemaName, tables] of bySchema) {
      const group = document.createElement("div");
      group.className = "schema";
      const title = document.createElement("h3");
      title.textContent = schemaName;
      group.append(title, ...tables.map((t) => tableEntry(...t)));
      list.append(group);
    }
    note.textContent = result.rows.length ? "" : "No tables visible to this service.";
    note.hidden = result.rows.length > 0;
  } catch (error) {
    note.hidden = false;
    handleCallError(error, note);
  }
}

function tableEntry(catalog, schema, table) {
  const name = [catalog, schema, table].map(quoteName).join(".");
  const entry = document.createElement("details");
  entry.className = "table";
  entry.dataset.table = `${catalog}.${schema}.${table}`;
  const summary = document.createElement("summary");
  summary.textContent = table;
  const columns = document.createElement("ul");
  columns.className = "columns";
  const use = document.createElement("button");
  use.type = "button";
  use.className = "small";
  use.textContent = "Query this table";
  use.addEventListener("click", () => {
    $("sql").value = `SELECT *\nFROM ${name}\nLIMIT 1000`;
    $("sql").focus();
  });
  entry.append(summary, columns, use);
  entry.addEventListener("toggle", async () => {
    if (!entry.open || entry.dataset.loaded) return;
    entry.dataset.loaded = "1";
    try {
      // The service's own column types (what a result of this table says), not the catalog's.
      const result = await postJson("/api/query", { sql: `SELECT * FROM ${name} LIMIT 0` });
      columns.replaceChildren(
        ...result.columns.map((column) => {
          const item = document.createElement("li");
          const label = document.createElement("span");
          label.textContent = column.name;
          const type = document.createElement("span");
          type.className = "col-type";
          type.textContent = column.type_text;
          item.append(label, type);
          return item;
        }),
      );
    } catch (error) {
      delete entry.dataset.loaded;
      const item = document.createElement("li");
      handleCallError(error, item);
      columns.replaceChildren(item);
    }
  });
  return entry;
}

// ---- named queries -----------------------------------------------------------------------

async function loadQueries() {
  const note = $("queries-note");
  const list = $("query-list");
  note.textContent = "Loading…";
  list.replaceChildren();
  try {
    const { queries } = await getJson("/api/queries");
    list.append(...queries.map(queryForm));
    note.hidden = queries.length > 0;
    note.textContent = queries.length ? "" : "None: set QUERIES_DIR to a folder of .sql files.";
  } catch (error) {
    note.hidden = false;
    handleCallError(error, note);
  }
}

function paramInput(param) {
  const id = `param-${crypto.randomUUID()}`;
  const wrapper = document.createElement("div");
  wrapper.className = "param";
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = `${param.name}${param.required ? " *" : ""}`;
  const type = document.createElement("span");
  type.className = "col-type";
  type.textContent = param.type;
  label.append(" ", type);
  let input;
  if (param.type === "BOOLEAN") {
    input = document.createElement("select");
    for (const choice of ["", "true", "false"]) {
      const option = document.createElement("option");
      option.value = choice;
      option.textContent = choice || (param.default !== null ? `default (${param.default})` : "—");
      input.append(option);
    }
  } else {
    input = document.createElement("input");
    input.type = param.type === "DATE" ? "date" : "text";
    if (/INT$|^DECIMAL|^FLOAT|^DOUBLE/.test(param.type)) input.inputMode = "decimal";
    input.placeholder = param.default !== null ? `default: ${param.default}` : "required";
  }
  input.id = id;
  input.name = param.name;
  wrapper.append(label, input);
  // A date field cannot show a placeholder: its default goes in the hint.
  const notes = [param.description, input.type === "date" && param.default ? `default ${param.default}` : ""];
  const hintText = notes.filter(Boolean).join(" · ");
  if (hintText) {
    const hint = document.createElement("small");
    hint.className = "muted";
    hint.textContent = hintText;
    wrapper.append(hint);
  }
  return wrapper;
}

function queryForm(query) {
  const entry = document.createElement("details");
  entry.className = "named";
  entry.dataset.query = query.name;
  const summary = document.createElement("summary");
  summary.textContent = query.name;
  const form = document.createElement("form");
  form.autocomplete = "off";
  if (query.description) {
    const description = document.createElement("p");
    description.className = "muted";
    description.textContent = query.description;
    form.append(description);
  }
  form.append(...query.params.map(paramInput));
  const submit = document.createElement("button");
  submit.type = "submit";
  submit.className = "primary named-run";
  submit.textContent = `Run ${query.name}`;
  form.append(submit);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    // Values go as text (the service parses them by the declared type); empty means default.
    const params = {};
    for (const param of query.params) {
      const value = form.elements.namedItem(param.name).value;
      if (value !== "") params[param.name] = value;
    }
    const body = { params };
    if ($("long-as-string").checked) body.long_as_string = true;
    runQuery(`/api/queries/${encodeURIComponent(query.name)}`, body, query.name);
  });
  entry.append(summary, form);
  return entry;
}

// ---- the API key ---------------------------------------------------------------------------

function showKeyState() {
  const hasKey = Boolean(apiKey());
  $("key-state").textContent = hasKey ? "API key: set (this tab)" : "API key: none";
  $("key-forget").hidden = !hasKey;
}

function openKeyDialog() {
  const dialog = $("key-dialog");
  if (!dialog.open) {
    $("key-input").value = "";
    dialog.showModal();
  }
}

function loadLists() {
  loadTables();
  loadQueries();
}

// ---- wiring --------------------------------------------------------------------------------

$("editor-form").addEventListener("submit", (event) => {
  event.preventDefault();
  runEditor();
});
$("sql").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    runEditor();
  } else if (event.key === "Tab" && !event.shiftKey) {
    event.preventDefault();
    event.target.setRangeText("  ", event.target.selectionStart, event.target.selectionEnd, "end");
  }
});
$("cancel").addEventListener("click", () => run.controller?.abort());
$("key-set").addEventListener("click", openKeyDialog);
$("key-forget").addEventListener("click", () => {
  forgetApiKey();
  showKeyState();
});
$("key-cancel").addEventListener("click", () => $("key-dialog").close());
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey($("key-input").value.trim());
  $("key-dialog").close();
  showKeyState();
  loadLists();
});

showKeyState();
loadLists();
document.body.dataset.ready = "1";
