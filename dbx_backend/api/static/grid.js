// A virtualized result table: rows live in one array; the DOM holds only the rows in view
// (plus a few), repositioned as the user scrolls, so a million rows cost what a screenful does.

const ROW_HEIGHT = 24; // px, must match .grid-row in console.css
const OVERSCAN = 8; // rows drawn above and below the viewport
// Browsers cap an element's height (about 33M px in Chromium); past this the scroll position
// maps onto row numbers proportionally instead of one row per ROW_HEIGHT.
const MAX_CANVAS_PX = 8_000_000;
const NUMERIC = new Set(["BYTE", "SHORT", "INT", "LONG", "FLOAT", "DOUBLE", "DECIMAL"]);
const SAMPLE_ROWS = 200; // rows measured to size the columns

export class Grid {
  constructor(element) {
    this.element = element;
    this.head = element.querySelector(".grid-head");
    this.canvas = element.querySelector(".grid-canvas");
    this.empty = element.querySelector(".grid-empty");
    this.columns = [];
    this.rows = [];
    this.pool = [];
    this.sized = false;
    this.pending = false;
    this.onFirstRow = null; // called once, after the first row was painted
    element.addEventListener("scroll", () => this.schedule(), { passive: true });
    new ResizeObserver(() => this.schedule()).observe(element);
  }

  get rowCount() {
    return this.rows.length;
  }

  clear() {
    this.columns = [];
    this.rows = [];
    this.sized = false;
    this.firstRowSeen = false;
    this.head.replaceChildren();
    this.canvas.replaceChildren();
    this.pool = [];
    this.element.scrollTop = 0;
    this.element.scrollLeft = 0;
    this.empty.hidden = false;
    this.schedule();
  }

  setColumns(columns) {
    this.columns = columns;
    this.numeric = columns.map((c) => NUMERIC.has(c.type));
    const cells = [headCell("#", "", "row number")];
    for (const column of columns) {
      const details = [
        `${column.name}: ${column.type_text || column.type}`,
        `type ${column.type}`,
        column.nullable === null || column.nullable === undefined ? null : `nullable ${column.nullable}`,
      ].filter(Boolean);
      cells.push(headCell(column.name, column.type_text || column.type, details.join("\n")));
    }
    this.head.replaceChildren(...cells);
    this.sizeColumns();
    this.empty.hidden = true;
  }

  append(rows) {
    for (const row of rows) this.rows.push(row);
    if (!this.sized && this.rows.length >= SAMPLE_ROWS) this.sizeColumns();
    this.schedule();
  }

  // Widths in `ch` from the header and the first rows, fixed afterwards so nothing jumps.
  sizeColumns() {
    const sample = this.rows.slice(0, SAMPLE_ROWS);
    const widths = this.columns.map((column, i) => {
      let width = Math.max(column.name.length, (column.type_text || column.type).length);
      for (const row of sample) width = Math.max(width, cellText(row[i]).length);
      return Math.min(Math.max(width + 1, 5), 48);
    });
    const gutter = Math.max(String(this.rows.length || 1).length, 7);
    // ch of the monospace font, plus the cell's padding and border.
    const template = [gutter, ...widths].map((w) => `calc(${w}ch + 18px)`).join(" ");
    this.element.style.setProperty("--grid-columns", template);
    this.sized = this.rows.length >= SAMPLE_ROWS;
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  render() {
    if (!this.sized && this.rows.length) this.sizeColumns();
    const total = this.rows.length;
    const fullHeight = total * ROW_HEIGHT;
    const canvasHeight = Math.min(fullHeight, MAX_CANVAS_PX);
    this.canvas.style.height = `${canvasHeight}px`;
    const viewport = Math.max(this.element.clientHeight - this.head.offsetHeight, ROW_HEIGHT);
    const visible = Math.ceil(viewport / ROW_HEIGHT) + 1;
    const scrollTop = this.element.scrollTop;
    let first;
    let offset; // px from the canvas top to row `first`
    if (fullHeight <= MAX_CANVAS_PX) {
      first = Math.floor(scrollTop / ROW_HEIGHT);
      offset = first * ROW_HEIGHT;
    } else {
      const scrollable = Math.max(canvasHeight - viewport, 1);
      first = Math.floor((Math.min(scrollTop, scrollable) / scrollable) * Math.max(total - visible, 0));
      offset = scrollTop;
    }
    const start = Math.max(first - OVERSCAN, 0);
    const end = Math.min(first + visible + OVERSCAN, total);
    this.ensurePool(end - start);
    for (let slot = 0; slot < this.pool.length; slot++) {
      const element = this.pool[slot];
      const index = start + slot;
      if (index >= end) {
        element.hidden = true;
        continue;
      }
      element.hidden = false;
      element.style.transform = `translateY(${offset + (index - first) * ROW_HEIGHT}px)`;
      if (element.rowIndex !== index || element.columnCount !== this.columns.length) {
        this.fill(element, index);
      }
    }
    if (!this.firstRowSeen && total > 0 && start === 0) {
      this.firstRowSeen = true;
      // A task queued from a frame callback runs after that frame was painted.
      setTimeout(() => this.onFirstRow?.(performance.now()), 0);
    }
  }

  ensurePool(size) {
    while (this.pool.length < size) {
      const row = document.createElement("div");
      row.className = "grid-row";
      row.setAttribute("role", "row");
      this.canvas.append(row);
      this.pool.push(row);
    }
  }

  fill(element, index) {
    const row = this.rows[index];
    const count = this.columns.length + 1;
    while (element.childElementCount < count) element.append(document.createElement("span"));
    while (element.childElementCount > count) element.lastChild.remove();
    element.rowIndex = index;
    element.columnCount = this.columns.length;
    element.dataset.row = String(index);
    const cells = element.children;
    cells[0].className = "cell gutter";
    cells[0].textContent = String(index + 1);
    for (let i = 0; i < this.columns.length; i++) {
      const value = row[i];
      const cell = cells[i + 1];
      const text = cellText(value);
      cell.className = value === null ? "cell null" : this.numeric[i] ? "cell num" : "cell";
      cell.textContent = text;
      cell.title = text.length > 12 ? text : "";
    }
  }

  // The values of the rows drawn now, as text, for tests and for copying.
  visibleRows() {
    return this.pool
      .filter((row) => !row.hidden && row.rowIndex !== undefined)
      .sort((a, b) => a.rowIndex - b.rowIndex)
      .map((row) => [...row.children].map((cell) => cell.textContent));
  }
}

function headCell(name, type, title) {
  const cell = document.createElement("div");
  cell.className = "cell head";
  cell.title = title;
  cell.setAttribute("role", "columnheader");
  const label = document.createElement("span");
  label.className = "col-name";
  label.textContent = name;
  const kind = document.createElement("span");
  kind.className = "col-type";
  kind.textContent = type;
  cell.append(label, kind);
  return cell;
}

export function cellText(value) {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
