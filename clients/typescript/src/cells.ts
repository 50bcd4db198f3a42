import type { Cell, Column, JsonShape } from "./types.js";

type Shape = Pick<JsonShape, "type" | "items" | "fields" | "values">;

/**
 * Rows with every LONG turned from its exact string (`long_as_string`) into a `bigint`, at any
 * depth: each column's JSON shape says where the LONGs are, so DECIMAL strings stay strings.
 */
export function longsAsBigInt<R>(rows: readonly (readonly unknown[])[], columns: readonly Column[]): R[] {
  const converters = columns.map((column) => converter(column));
  if (converters.every((convert) => convert === undefined)) return rows as R[];
  return rows.map((row) =>
    row.map((cell, index) => {
      const convert = converters[index];
      return convert === undefined || cell === null ? cell : convert(cell);
    }),
  ) as R[];
}

type Convert = (value: unknown) => Cell;

/** A converter for values of `shape`, or undefined when they hold no LONG. */
function converter(shape: Shape): Convert | undefined {
  if (shape.type === "LONG") {
    return (value) => (typeof value === "string" ? BigInt(value) : (value as Cell));
  }
  if (shape.items !== undefined) {
    const item = converter(shape.items);
    if (item === undefined) return undefined;
    return (value) =>
      Array.isArray(value) ? value.map((v: unknown) => (v === null ? null : item(v))) : (value as Cell);
  }
  if (shape.fields !== undefined) {
    const fields = shape.fields
      .map((field) => [field.name, converter(field)] as const)
      .filter((pair): pair is readonly [string, Convert] => pair[1] !== undefined);
    if (fields.length === 0) return undefined;
    return (value) => {
      if (typeof value !== "object" || value === null || Array.isArray(value)) return value as Cell;
      const out: { [key: string]: Cell } = { ...(value as { [key: string]: Cell }) };
      for (const [name, convert] of fields) {
        const inner = out[name];
        if (inner !== undefined && inner !== null) out[name] = convert(inner);
      }
      return out;
    };
  }
  if (shape.values !== undefined) {
    const each = converter(shape.values);
    if (each === undefined) return undefined;
    return (value) => {
      if (typeof value !== "object" || value === null || Array.isArray(value)) return value as Cell;
      const out: { [key: string]: Cell } = {};
      for (const [key, inner] of Object.entries(value)) out[key] = inner === null ? null : each(inner);
      return out;
    };
  }
  return undefined;
}
