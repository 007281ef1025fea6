// Fault kinds on the page: each kind's letter (its `mark` in the farm's kind registry, sent
// in the stream's layout), drawn inside a faulted cell of the grid and beside the kind's name
// in the legend, the fault lists and the table, so a kind is told by its letter, never by
// colour. A cell with faults of several kinds shows "+". Nothing here names a kind.

export const SEVERAL = "+";

// Each kind's letter by name, as the latest layout gave them (one farm per page).
export const MARKS = new Map();

export function learnMarks(kinds) {
  MARKS.clear();
  for (const { kind, mark } of kinds ?? []) MARKS.set(kind, mark);
}

// The kinds a cell's mask names (bit i: the i-th of the layout's fault_kinds).
export function kindsOf(mask, kinds) {
  const names = [];
  for (let i = 0; i < kinds.length; i++) if ((mask >>> i) & 1) names.push(kinds[i].kind);
  return names;
}

// The letter a cell shows: its kind's, "+" for several kinds, "" for none.
export function markOf(mask, kinds) {
  if (!mask) return "";
  if (mask & (mask - 1)) return SEVERAL;
  return kinds[31 - Math.clz32(mask)]?.mark ?? SEVERAL;
}

// 3 x 5 pixel letters, for cells too small for a font (6 px at 10,000 servers): five rows
// of three bits each, the top row first.
const GLYPHS = {
  A: [2, 5, 7, 5, 5], B: [6, 5, 6, 5, 6], C: [3, 4, 4, 4, 3], D: [6, 5, 5, 5, 6],
  E: [7, 4, 6, 4, 7], F: [7, 4, 6, 4, 4], G: [3, 4, 5, 5, 3], H: [5, 5, 7, 5, 5],
  I: [7, 2, 2, 2, 7], J: [1, 1, 1, 5, 2], K: [5, 5, 6, 5, 5], L: [4, 4, 4, 4, 7],
  M: [5, 7, 7, 5, 5], N: [6, 5, 5, 5, 5], O: [2, 5, 5, 5, 2], P: [6, 5, 6, 4, 4],
  Q: [2, 5, 5, 6, 3], R: [6, 5, 6, 5, 5], S: [3, 4, 2, 1, 6], T: [7, 2, 2, 2, 2],
  U: [5, 5, 5, 5, 7], V: [5, 5, 5, 5, 2], W: [5, 5, 7, 7, 5], X: [5, 5, 2, 5, 5],
  Y: [5, 5, 2, 2, 2], Z: [7, 1, 2, 4, 7], "+": [0, 2, 7, 2, 0],
};

// Every letter the small cells can draw (the browser test checks each kind's is one).
export const DRAWABLE = Object.keys(GLYPHS);

// A mark inside the box (x, y, size): a bold letter when the cell is 9 px or more, else the
// 3 x 5 glyph.
export function drawMark(context, mark, x, y, size, colour) {
  context.fillStyle = colour;
  if (size >= 9) {
    context.font = `bold ${size - 2}px system-ui, sans-serif`;
    context.textAlign = "center";
    context.textBaseline = "middle";
    context.fillText(mark, x + size / 2, y + size / 2 + 1);
    context.textAlign = "start";
    return;
  }
  const rows = GLYPHS[mark] ?? GLYPHS[SEVERAL];
  const left = x + Math.floor((size - 3) / 2);
  const top = y + Math.floor((size - 5) / 2);
  rows.forEach((bits, row) => {
    for (let column = 0; column < 3; column++) {
      if ((bits >> (2 - column)) & 1) context.fillRect(left + column, top + row, 1, 1);
    }
  });
}

// A kind as the page writes it: its letter in a box drawn like a faulted cell, then its name.
export function kindBadge(kind) {
  const letter = MARKS.get(kind);
  if (letter === undefined) { // before the stream's layout: the name alone
    const badge = document.createElement("span");
    badge.className = "kind";
    badge.dataset.kind = kind;
    badge.textContent = kind;
    return badge;
  }
  return markBadge(letter, kind, kind);
}

// A letter in its box, then what it means.
export function markBadge(letter, text, kind = "") {
  const badge = document.createElement("span");
  badge.className = "kind";
  if (kind) badge.dataset.kind = kind;
  const mark = document.createElement("i");
  mark.className = "mark";
  mark.setAttribute("aria-hidden", "true"); // the name follows: read once, not "D delay"
  mark.textContent = letter;
  badge.append(mark, ` ${text}`);
  return badge;
}
