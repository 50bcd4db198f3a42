// Arrow answers read with apache-arrow, against a live `dbx-backend dev` started here: every
// type's values equal the JSON answer of the same query. Every wait is bounded.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { DataType, RecordBatchReader, tableFromIPC, type Field, type Table } from "apache-arrow";

import { DbxClient, DbxError, type Column } from "../src/index.js";
import { collectGarbage, startDev, type DevService } from "./server.js";

let dev: DevService;
let client: DbxClient;

before(async () => {
  dev = await startDev();
  client = new DbxClient({ baseUrl: dev.url });
});

after(async () => {
  await dev?.stop();
});

// One column per type the local warehouse has; the JSON answer is INLINE (JSON_ARRAY), the
// Arrow answer reads the warehouse's ARROW_STREAM chunks: two ways in, one value each.
const EVERY_TYPE =
  "SELECT CAST(-128 AS TINYINT) AS b, CAST(32767 AS SMALLINT) AS s, CAST(-5 AS INT) AS i, " +
  "CAST(9223372036854775807 AS BIGINT) AS l, CAST(0.1 AS FLOAT) AS f, CAST(1.5 AS DOUBLE) AS d, " +
  "CAST('NaN' AS DOUBLE) AS nan, CAST('-Infinity' AS DOUBLE) AS ninf, " +
  "CAST('-123.4500' AS DECIMAL(38,4)) AS dec, CAST(0.05 AS DECIMAL(3,2)) AS small, true AS t, " +
  "'héllo \"☃\"' AS u, '' AS empty, DATE'1900-02-28' AS dt, " +
  "TIMESTAMP'2024-01-15 09:30:00.123456' AS ts, " +
  "CAST('2024-01-15 09:30:00.5' AS TIMESTAMP_NTZ) AS ntz, X'CAFE' AS bin, " +
  "ARRAY(CAST(9007199254740993 AS BIGINT), NULL) AS arr, " +
  "NAMED_STRUCT('id', CAST(9007199254740993 AS BIGINT), 'price', CAST(1.10 AS DECIMAL(10,2)), " +
  "'at', DATE'2024-02-29') AS st, MAP('k', CAST(2.5 AS DOUBLE)) AS m, " +
  "MAP(CAST(1 AS INT), 'one') AS mi, CAST(NULL AS STRING) AS nul, INTERVAL 3 DAY AS iv";

/** An apache-arrow value in the JSON answer's form (the README's type table, with
 * `long_as_string`: LONGs as exact strings at any depth). */
function asJson(type: DataType, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (DataType.isInt(type)) return type.bitWidth === 64 ? String(value as bigint) : value;
  if (DataType.isFloat(type)) {
    const number = value as number;
    if (Number.isNaN(number)) return "NaN";
    if (!Number.isFinite(number)) return number > 0 ? "Infinity" : "-Infinity";
    return type.precision === 1 ? shortestFloat32(number) : number;
  }
  if (DataType.isDecimal(type)) return decimalText(String(value), type.scale);
  if (DataType.isDate(type)) return new Date(value as number).toISOString().slice(0, 10);
  if (DataType.isTimestamp(type)) return timestampText(value as number, type.timezone !== null);
  if (DataType.isBinary(type)) return Buffer.from(value as Uint8Array).toString("base64");
  if (DataType.isList(type)) {
    const child = type.children[0] as Field;
    return [...(value as Iterable<unknown>)].map((item) => asJson(child.type, item));
  }
  if (DataType.isStruct(type)) {
    const row = value as Record<string, unknown>;
    return Object.fromEntries(type.children.map((f: Field) => [f.name, asJson(f.type, row[f.name])]));
  }
  if (DataType.isMap(type)) {
    const [key, item] = (type.children[0] as Field).type.children as Field[];
    const entries = [...(value as Map<unknown, unknown>)].map(([k, v]) => [asJson(key!.type, k), asJson(item!.type, v)]);
    return DataType.isUtf8(key!.type)
      ? Object.fromEntries(entries)
      : entries.map(([k, v]) => ({ key: k, value: v }));
  }
  return value;
}

/** The shortest decimal that is the same 32-bit float, as the JSON answer writes a FLOAT. */
function shortestFloat32(value: number): number {
  for (let digits = 1; digits < 10; digits += 1) {
    const shortest = Number(value.toPrecision(digits));
    if (Math.fround(shortest) === value) return shortest;
  }
  return value;
}

/** An unscaled decimal integer's digits at `scale`: "-1234500", 4 -> "-123.4500". */
function decimalText(unscaled: string, scale: number): string {
  const negative = unscaled.startsWith("-");
  const digits = (negative ? unscaled.slice(1) : unscaled).padStart(scale + 1, "0");
  const text = scale === 0 ? digits : `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  return negative ? `-${text}` : text;
}

/** Milliseconds since the epoch, with microseconds as the fraction, as the JSON answer writes it. */
function timestampText(ms: number, zoned: boolean): string {
  const micros = BigInt(Math.round(ms * 1000));
  const whole = new Date(Number(micros / 1000n)).toISOString().slice(0, 23);
  const extra = Number(((micros % 1000n) + 1000n) % 1000n);
  return `${whole}${extra === 0 ? "" : String(extra).padStart(3, "0")}${zoned ? "Z" : ""}`;
}

async function arrowTable(sql: string): Promise<Table> {
  return tableFromIPC(await client.arrow(sql));
}

describe("arrow", () => {
  test("every type read with apache-arrow equals the JSON answer of the same query", async () => {
    const json = await client.query(EVERY_TYPE, { longAsString: true });
    const table = await arrowTable(EVERY_TYPE);

    assert.equal(table.numRows, 1);
    const columns = json.columns as Column[];
    assert.deepEqual(
      table.schema.fields.map((f) => [f.name, f.metadata.get("type_text"), f.metadata.get("type_name")]),
      columns.map((c) => [c.name, c.type_text, c.type]),
    );
    const row = json.rows[0] as unknown[];
    for (const [index, field] of table.schema.fields.entries()) {
      const value = table.getChildAt(index)?.get(0);
      if (columns[index]?.type === "INTERVAL") {
        // As the warehouse gives it: Arrow's month-day-nano interval; its text in JSON.
        assert.equal(String(field.type), "Interval<MONTH_DAY_NANO>");
        assert.deepEqual([...(value as Int32Array)].slice(0, 2), [0, 3]);
        assert.equal(row[index], "3 days");
        continue;
      }
      assert.deepEqual(asJson(field.type, value), row[index], `column ${field.name} (${String(field.type)})`);
    }
    assert.ok(table.schema.metadata.get("statement_id"));
  });

  test("a multi-chunk result arrives as record batches, in order", async () => {
    const reader = await RecordBatchReader.from(
      await client.arrow("SELECT id, CAST(id AS DOUBLE) / 4 AS q FROM range(250000) t(id)"),
    );
    let next = 0n;
    let batches = 0;
    let types: string[] = [];
    for await (const batch of reader) {
      batches += 1;
      types = batch.schema.fields.map((f) => String(f.type));
      const ids = batch.getChild("id")!;
      for (let i = 0; i < batch.numRows; i += 1) assert.equal(ids.get(i), next + BigInt(i));
      next += BigInt(batch.numRows);
    }

    assert.equal(next, 250000n);
    assert.ok(batches > 1);
    assert.deepEqual(types, ["Int64", "Float64"]);
  });

  test("the stream survives a garbage collection before it is read", async () => {
    const stream = await client.arrow("SELECT id FROM range(1000) t(id)");
    await collectGarbage(); // the fetch Response behind it is gone now

    const table = await tableFromIPC(stream);

    assert.equal(table.numRows, 1000);
  });

  test("a named query answers Arrow too", async () => {
    const queries = await client.listQueries();
    const named = queries.queries.find((q) => q.params.every((p) => !p.required));
    assert.ok(named, "the repository's queries/ folder has a query without required parameters");

    const table = await tableFromIPC(await client.arrowQuery(named.name, {}, { rowLimit: 5 }));

    assert.ok(table.numRows <= 5);
    assert.ok(table.schema.fields.every((f) => f.metadata.has("type_text")));
  });

  test("an error before the first byte is a DbxError with the JSON envelope", async () => {
    await assert.rejects(client.arrow("SELECT * FROM no_such_table"), (error: unknown) => {
      assert.ok(error instanceof DbxError);
      assert.equal(error.code, "SQL_ERROR");
      return true;
    });
  });
});
