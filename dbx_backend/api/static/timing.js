// Server-Timing (W3C Server Timing): `name;dur=12.5;desc="text", other;desc=hit`.

export function parseServerTiming(header) {
  if (!header) return [];
  const entries = [];
  for (const part of splitOutsideQuotes(header, ",")) {
    const [name, ...params] = splitOutsideQuotes(part, ";").map((s) => s.trim());
    if (!name) continue;
    const entry = { name };
    for (const param of params) {
      const eq = param.indexOf("=");
      const key = (eq < 0 ? param : param.slice(0, eq)).trim().toLowerCase();
      let value = eq < 0 ? "" : param.slice(eq + 1).trim();
      if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) {
        value = value.slice(1, -1).replace(/\\(.)/g, "$1");
      }
      if (key === "dur") entry.dur = Number(value);
      else if (key === "desc") entry.desc = value;
    }
    entries.push(entry);
  }
  return entries;
}

function splitOutsideQuotes(text, separator) {
  const parts = [];
  let current = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"' && text[i - 1] !== "\\") quoted = !quoted;
    if (ch === separator && !quoted) {
      parts.push(current);
      current = "";
    } else {
      current += ch;
    }
  }
  parts.push(current);
  return parts;
}
