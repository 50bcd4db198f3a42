"use client";

// A page on the typed client. It never sees the API key: its client talks to this app's own
// route (/api/dbx/...), which adds the key on the server and streams the answer through.
import { DbxClient, DbxError, type Cell, type Column } from "dbx-backend-client";
import { useRef, useState } from "react";

const dbx = new DbxClient({ baseUrl: "/api/dbx" });
const EXAMPLE =
  "SELECT pickup_zip, count(*) AS trips, round(avg(fare_amount), 2) AS avg_fare\n" +
  "FROM samples.nyctaxi.trips GROUP BY pickup_zip ORDER BY trips DESC LIMIT 50";

export default function Page() {
  const [sql, setSql] = useState(EXAMPLE);
  const [columns, setColumns] = useState<Column[]>([]);
  const [rows, setRows] = useState<(readonly Cell[])[]>([]);
  const [note, setNote] = useState("");
  const running = useRef<AbortController | null>(null);

  async function run() {
    running.current?.abort();
    const controller = new AbortController();
    running.current = controller;
    setRows([]);
    setNote("running…");
    const stream = dbx.stream(sql, { signal: controller.signal });
    void stream.header.then((header) => {
      setColumns(header.columns);
      if (header.total_row_count !== undefined) setNote(`${header.total_row_count} rows coming`);
    });
    try {
      let batch: (readonly Cell[])[] = [];
      for await (const row of stream) {
        batch.push(row);
        if (batch.length === 500) {
          const ready = batch;
          setRows((shown) => [...shown, ...ready]);
          batch = [];
        }
      }
      setRows((shown) => [...shown, ...batch]);
      setNote(`${stream.footer?.row_count ?? 0} rows · ${stream.footer?.server_timing ?? ""}`);
    } catch (error) {
      if (controller.signal.aborted) setNote("stopped (the statement was cancelled)");
      else if (error instanceof DbxError) setNote(`${error.code}: ${error.message}`);
      else setNote(String(error));
    }
  }

  return (
    <main>
      <h1>dbx-backend from Next.js</h1>
      <textarea value={sql} onChange={(e) => setSql(e.target.value)} rows={4} cols={100} />
      <p>
        <button onClick={() => void run()}>Run</button>{" "}
        <button onClick={() => running.current?.abort()}>Stop</button> <span>{note}</span>
      </p>
      <table>
        <thead>
          <tr>
            {columns.map((c) => (
              <th key={c.position} title={`${c.type_text} → JSON ${c.json_type}`}>
                {c.name}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((row, i) => (
            <tr key={i}>
              {row.map((cell, j) => (
                <td key={j}>{show(cell, columns[j])}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}

/** A cell as text. TIMESTAMP_NTZ has no offset: `new Date(text)` would read it as local
 * time, so it is shown as the text it is. */
function show(cell: Cell, column: Column | undefined): string {
  if (cell === null) return "";
  if (typeof cell === "object") return JSON.stringify(cell, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
  if (column?.type === "TIMESTAMP") return new Date(String(cell)).toLocaleString();
  return String(cell);
}
