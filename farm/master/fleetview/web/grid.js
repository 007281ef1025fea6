// The fleet as a grid of cells on one canvas: one cell per server, grouped by fleet in name
// order, each state drawn with its own shape and colour and shaded by request rate, a cell
// with faults on marked with its fault kind's letter (marks.js). Deltas repaint only their
// cells; a filter change lays the visible cells out again. Nothing here talks to the network.

import { drawMark, markOf } from "./marks.js";

const HEADER = 18; // px above each group's cells, for its label
const PAD = 8;
export const BACKGROUND = "#101317";

// Okabe and Ito's colour-blind-safe palette, one colour per state (up, erroring, faulted,
// offline); the shape tells the state without colour: up a square, erroring a triangle,
// faulted a square with its fault kind's letter in the background's colour (a dark stripe
// while its kind is not known), offline a hollow square (with the letter inside when a fault
// holds it down).
export const STATE_COLOURS = ["#009e73", "#e69f00", "#cc79a7", "#a0a0a0"];
export const SHAPES = ["square", "triangle", "striped", "hollow"];
// Idle cells at 76% of the colour's brightness (sRGB), the busiest at 100%: every shade
// keeps at least 3:1 against the background (checked by the browser test).
const DIMMEST = 0.76;

function shade(hex, factor) {
  const channels = [1, 3, 5].map((i) => Math.round(parseInt(hex.slice(i, i + 2), 16) * factor));
  return `rgb(${channels.join(" ")})`;
}

function colour(code) {
  const state = Math.min(code >> 3, 3);
  const bucket = code & 7;
  if (state === 3) return STATE_COLOURS[3]; // it answers nothing: not shaded
  return shade(STATE_COLOURS[state], DIMMEST + ((1 - DIMMEST) * Math.min(bucket, 5)) / 5);
}

export const PALETTE = Array.from({ length: 32 }, (_, code) => colour(code));
// The colour of a fault kind's letter in each state's shape: the background's on a filled
// shape (so its contrast is the shade's own, 3:1 or more), the outline's in a hollow one.
export const MARK_COLOURS = [BACKGROUND, BACKGROUND, BACKGROUND, STATE_COLOURS[3]];

// One cell's shape at (x, y), `size` px wide, in `fill`.
function drawShape(context, state, x, y, size, fill) {
  context.fillStyle = fill;
  if (SHAPES[state] === "triangle") {
    context.beginPath();
    context.moveTo(x + size / 2, y);
    context.lineTo(x + size, y + size);
    context.lineTo(x, y + size);
    context.closePath();
    context.fill();
  } else if (SHAPES[state] === "hollow") {
    const line = size >= 8 ? 2 : 1;
    context.fillRect(x, y, size, size);
    context.fillStyle = BACKGROUND;
    context.fillRect(x + line, y + line, size - 2 * line, size - 2 * line);
  } else {
    context.fillRect(x, y, size, size);
    if (SHAPES[state] === "striped") {
      context.strokeStyle = BACKGROUND;
      context.lineWidth = size >= 8 ? 2 : 1;
      context.beginPath();
      context.moveTo(x, y + size);
      context.lineTo(x + size, y);
      context.stroke();
    }
  }
}

export class Grid {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d", { alpha: false });
    this.layout = null;
    this.codes = new Uint8Array(0);
    this.masks = new Uint32Array(0); // each cell's fault kinds (marks.js)
    this.kinds = [];
    this.large = false; // cells at their largest whatever the fleet's size
    this.visible = () => true;
    this.selected = -1;
    this.blocks = []; // per drawn group: {group, top, cells: [cell ids]}
    this.x = new Int32Array(0); // each cell's position on the canvas, -1 when filtered out
    this.y = new Int32Array(0);
    this.dirty = new Set();
    this.full = false;
    this.frame = 0;
  }

  setLayout(layout) {
    this.layout = layout;
    this.codes = new Uint8Array(layout.cells);
    this.masks = new Uint32Array(layout.cells);
    this.kinds = layout.fault_kinds ?? [];
    this.x = new Int32Array(layout.cells).fill(-1);
    this.y = new Int32Array(layout.cells).fill(-1);
    this.index = new Map(layout.names.map((name, cell) => [name, cell]));
    this.selected = -1; // a cell number of the old layout; the caller selects again by name
    this.dirty.clear();
    this.relayout();
  }

  setCodes(codes) {
    this.codes = codes;
    this.relayout();
  }

  // Apply a delta: [cell, code, cell, code, ...]. Returns true when a cell changed state.
  apply(pairs) {
    let stateChanged = false;
    for (let i = 0; i < pairs.length; i += 2) {
      const cell = pairs[i];
      const code = pairs[i + 1];
      if (this.codes[cell] >> 3 !== code >> 3) stateChanged = true;
      this.codes[cell] = code;
      this.dirty.add(cell);
    }
    this.schedule();
    return stateChanged;
  }

  // Each faulted cell's kinds mask: [cell, mask, cell, mask, ...]. A snapshot's list is every
  // cell with faults (`fresh`: the others have none); a tick's, the masks that changed.
  applyFaults(pairs, fresh = false) {
    if (fresh) {
      for (let cell = 0; cell < this.masks.length; cell++) if (this.masks[cell]) this.dirty.add(cell);
      this.masks.fill(0);
    }
    for (let i = 0; i < (pairs ?? []).length; i += 2) {
      this.masks[pairs[i]] = pairs[i + 1];
      this.dirty.add(pairs[i]);
    }
    this.schedule();
  }

  setLarge(large) {
    this.large = large;
    this.relayout();
  }

  setFilter(visible) {
    this.visible = visible;
    this.relayout();
  }

  select(cell) {
    const previous = this.selected;
    this.selected = cell;
    if (previous >= 0) this.dirty.add(previous);
    if (cell >= 0) this.dirty.add(cell);
    this.schedule();
  }

  get pitch() {
    const cells = this.layout ? this.layout.cells : 0;
    return this.large || cells <= 1000 ? 16 : cells <= 4000 ? 11 : 8;
  }

  // Place every visible cell: groups one under the other, cells in rows across the width.
  relayout() {
    if (!this.layout) return;
    const pitch = this.pitch;
    const width = Math.max(200, this.canvas.parentElement.clientWidth - 2);
    const columns = Math.max(1, Math.floor((width - 2 * PAD) / pitch));
    this.x.fill(-1);
    this.y.fill(-1);
    this.blocks = [];
    let top = PAD;
    let shown = 0;
    for (const group of this.layout.groups) {
      const cells = [];
      for (let cell = group.start; cell < group.start + group.count; cell++) {
        if (this.visible(cell)) cells.push(cell);
      }
      if (!cells.length) continue;
      const first = top + HEADER;
      cells.forEach((cell, i) => {
        this.x[cell] = PAD + (i % columns) * pitch;
        this.y[cell] = first + Math.floor(i / columns) * pitch;
      });
      this.blocks.push({ group, top, first, cells, columns });
      top = first + Math.ceil(cells.length / columns) * pitch + PAD;
      shown += cells.length;
    }
    this.columns = columns;
    this.height = top;
    this.width = width;
    this.shown = shown;
    this.full = true;
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  draw() {
    this.frame = 0;
    if (this.full) this.drawAll();
    else for (const cell of this.dirty) this.drawCell(cell);
    this.dirty.clear();
    this.full = false;
    this.canvas.dataset.cells = String(this.shown);
  }

  drawAll() {
    const ratio = window.devicePixelRatio || 1;
    const { canvas, context } = this;
    canvas.width = Math.round(this.width * ratio);
    canvas.height = Math.round(this.height * ratio);
    canvas.style.width = `${this.width}px`;
    canvas.style.height = `${this.height}px`;
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.fillStyle = BACKGROUND;
    context.fillRect(0, 0, this.width, this.height);
    context.font = "12px system-ui, sans-serif";
    context.textBaseline = "middle";
    for (const block of this.blocks) {
      const { group, top, cells } = block;
      const hidden = group.count - cells.length;
      const label = `${group.fleet} · ${cells.length} server${cells.length === 1 ? "" : "s"}`;
      context.fillStyle = "#9aa4b1";
      context.fillText(hidden ? `${label} (${hidden} filtered out)` : label, PAD, top + HEADER / 2);
      for (const cell of cells) this.drawCell(cell);
    }
  }

  drawCell(cell) {
    const x = this.x[cell];
    const y = this.y[cell];
    if (x < 0) return;
    const size = this.pitch - 2;
    const context = this.context;
    context.fillStyle = BACKGROUND;
    context.fillRect(x - 1, y - 1, size + 2, size + 2);
    const code = this.codes[cell];
    const state = Math.min(code >> 3, 3);
    const mark = markOf(this.masks[cell], this.kinds);
    drawShape(context, mark && state === 2 ? 0 : state, x, y, size, PALETTE[code]);
    if (mark) this.drawMark(mark, state, x, y, size);
    if (cell === this.selected) {
      context.strokeStyle = "#ffffff";
      context.lineWidth = 2;
      context.strokeRect(x, y, size, size);
    }
  }

  drawMark(mark, state, x, y, size) {
    const context = this.context;
    if (state === 3 && size < 9) {
      // A 6 px hollow square has no room inside for a 3 x 5 letter: the letter alone, in the
      // outline's colour (still no fill: told from a faulted cell's filled square by shape).
      context.fillStyle = BACKGROUND;
      context.fillRect(x, y, size, size);
    }
    drawMark(context, mark, x, y, size, MARK_COLOURS[state]);
  }

  // The cell under a point of the canvas (CSS pixels), or -1.
  cellAt(px, py) {
    const pitch = this.pitch;
    for (const block of this.blocks) {
      const rows = Math.ceil(block.cells.length / block.columns);
      if (py < block.first || py >= block.first + rows * pitch) continue;
      const column = Math.floor((px - PAD) / pitch);
      const row = Math.floor((py - block.first) / pitch);
      if (column < 0 || column >= block.columns) return -1;
      return block.cells[row * block.columns + column] ?? -1;
    }
    return -1;
  }

  // The centre of a cell in CSS pixels of the canvas, or null when it is not drawn.
  centre(cell) {
    if (cell < 0 || this.x[cell] < 0) return null;
    const half = (this.pitch - 2) / 2;
    return { x: this.x[cell] + half, y: this.y[cell] + half };
  }
}
