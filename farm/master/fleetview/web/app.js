// The fleet view: the live stream from the master (GET /api/v1/view/stream, server-sent
// events), the grid, the farm totals, filters and search. A click on a cell opens the
// server's panel (server.js).

import { FarmFaults } from "./faultlist.js";
import { BACKGROUND, Grid, MARK_COLOURS, PALETTE, SHAPES, STATE_COLOURS } from "./grid.js";
import { DRAWABLE, SEVERAL, kindBadge, kindsOf, learnMarks, markBadge, markOf } from "./marks.js";
import { ServerPanel } from "./server.js";
import { naturalCompare } from "./words.js";

const $ = (id) => document.getElementById(id);
const grid = new Grid($("grid"));
const panel = new ServerPanel($("server"), (name) => openServer(name));
const farmFaults = new FarmFaults($("farm-faults"));
let layout = null;
let seq = 0;
// The page must never show a healthy fleet it cannot see: ticks come twice a second, so
// none for STALE_MS means the farm is unreachable (or stopped), whatever EventSource says.
const STALE_MS = 2000;
let lastEvent = 0;
let unreachableSince = null;
let source = null;

// -- the stream -------------------------------------------------------------------------

function connect() {
  source = new EventSource("/api/v1/view/stream");
  const heard = () => {
    lastEvent = Date.now();
    reachable();
  };
  source.addEventListener("layout", (event) => {
    heard();
    // First on every connection, and again whenever a fleet is scaled: cells are renumbered,
    // so the filters and the open server's cell are worked out again from names.
    layout = JSON.parse(event.data);
    grid.setLayout(layout);
    learnMarks(layout.fault_kinds);
    fillKindLegend(layout.fault_kinds ?? []);
    fillFleets(layout);
    farmFaults.setFleets([...new Set(layout.groups.map((group) => group.fleet))]);
    applyFilters();
    if (panel.name) grid.select(grid.index.get(panel.name) ?? -1);
    else restoreFromHash();
  });
  source.addEventListener("snapshot", (event) => {
    heard();
    const data = JSON.parse(event.data);
    const bytes = atob(data.codes);
    const codes = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) codes[i] = bytes.charCodeAt(i);
    grid.setCodes(codes);
    grid.applyFaults(data.faults, true);
    update(data);
  });
  source.addEventListener("tick", (event) => {
    heard();
    const data = JSON.parse(event.data);
    if (data.seq !== seq + 1) return; // cannot happen on one connection; a reconnect resyncs
    if (grid.apply(data.cells) && !allStates()) grid.relayout();
    grid.applyFaults(data.faults);
    update(data);
  });
  source.addEventListener("open", () => setLink("live"));
  source.addEventListener("error", () => {
    setLink("reconnecting…");
    unreachable();
    // EventSource gives up for good on some failures (an HTTP error while the farm stops):
    // start a new one, so the page comes back by itself when the farm does.
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      setTimeout(connect, 1000);
    }
  });
}

function watch() {
  if (lastEvent && Date.now() - lastEvent > STALE_MS) unreachable();
}

function unreachable() {
  if (unreachableSince !== null) return;
  unreachableSince = new Date(lastEvent || Date.now());
  const banner = $("unreachable");
  const time = banner.querySelector("time");
  time.dateTime = unreachableSince.toISOString();
  time.textContent = unreachableSince.toLocaleTimeString("en-GB", { hour12: false });
  banner.hidden = false;
  document.body.classList.add("unreachable");
  $("t-link").textContent = "unreachable";
  document.body.dataset.link = "down";
  for (const row of $("workers").querySelectorAll("tbody tr")) {
    row.dataset.state = "unknown";
    row.children[2].textContent = "unknown";
  }
  // A stream that stopped without an error (a frozen farm) is closed and opened again.
  if (source && source.readyState === EventSource.OPEN) {
    source.close();
    setTimeout(connect, 1000);
  }
}

function reachable() {
  if (unreachableSince === null) return;
  unreachableSince = null;
  $("unreachable").hidden = true;
  document.body.classList.remove("unreachable");
  if (source?.readyState === EventSource.OPEN) setLink("live");
}

function update(data) {
  seq = data.seq;
  document.body.dataset.seq = String(seq);
  showTotals(data.totals);
  countStates();
  if (!$("table-view").hidden) fillTable();
  if (panel.name) panel.setState(stateOf(panel.name));
}

function setLink(text) {
  $("t-link").textContent = text;
  document.body.dataset.link = text === "live" && unreachableSince === null ? "live" : "down";
}

// -- totals -----------------------------------------------------------------------------

const number = new Intl.NumberFormat("en");

function showTotals(totals) {
  if (totals.stopping) setLink("farm stopping");
  $("t-servers").textContent =
    `${number.format(totals.servers_ready)} / ${number.format(totals.servers_total)}`;
  $("t-rps").textContent = number.format(totals.requests_per_s);
  $("t-eps").textContent = number.format(totals.exceptions_per_s);
  const faults = $("t-faults");
  faults.textContent = totals.faults_active ?? "n/a";
  faults.classList.toggle("muted", totals.faults_active == null);
  const scenario = $("t-scenario");
  scenario.textContent = describeScenario(totals.scenario);
  scenario.classList.toggle("muted", totals.scenario == null);
  const rows = totals.workers.map((w) => {
    const row = document.createElement("tr");
    row.dataset.state = w.state;
    const age = w.heartbeat_age_s == null ? "–" : `${w.heartbeat_age_s.toFixed(1)} s`;
    for (const text of [w.worker, w.pid ?? "–", w.state, w.servers, age, w.restarts]) {
      const td = document.createElement("td");
      td.textContent = String(text);
      row.append(td);
    }
    return row;
  });
  $("workers").querySelector("tbody").replaceChildren(...rows);
}

function describeScenario(scenario) {
  if (scenario == null) return "none";
  if (typeof scenario !== "object") return String(scenario);
  return Object.entries(scenario)
    .map(([key, value]) => `${key} ${value}`)
    .join(" · ");
}

// The counts beside each state follow the fleet and name filters (not the state boxes:
// they say how many a box would show).
function countStates() {
  const counts = [0, 0, 0, 0];
  const shown = visibleBut();
  for (let cell = 0; cell < grid.codes.length; cell++) {
    if (shown(cell)) counts[grid.codes[cell] >> 3]++;
  }
  for (const box of document.querySelectorAll("#f-states input")) {
    const count = counts[layout.states.indexOf(box.value)];
    const label = box.closest("label");
    label.dataset.count = String(count);
    label.querySelector(".count").textContent = number.format(count);
  }
}

// -- filters and search -----------------------------------------------------------------

function fillFleets(layout) {
  const select = $("f-fleet");
  const chosen = select.value;
  const fleets = [...new Set(layout.groups.map((group) => group.fleet))];
  const options = fleets.map((fleet) => new Option(fleet, fleet));
  select.replaceChildren(new Option("all fleets", ""), ...options);
  if (fleets.includes(chosen)) select.value = chosen;
}

// A glob (* and ?) when it has one, else a substring; case does not matter.
function matcher(text) {
  const pattern = text.trim().toLowerCase();
  if (!pattern) return () => true;
  if (!/[*?]/.test(pattern)) return (name) => name.toLowerCase().includes(pattern);
  const source = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  const regex = new RegExp(`^${source}$`);
  return (name) => regex.test(name.toLowerCase());
}

function allStates() {
  return [...document.querySelectorAll("#f-states input")].every((box) => box.checked);
}

// Whether a cell passes the fleet and name filters.
function visibleBut() {
  const fleet = $("f-fleet").value;
  const nameOk = matcher($("f-name").value);
  const fleetOf = new Array(layout.cells);
  for (const group of layout.groups) fleetOf.fill(group.fleet, group.start, group.start + group.count);
  return (cell) => (!fleet || fleetOf[cell] === fleet) && nameOk(layout.names[cell]);
}

function applyFilters() {
  if (!layout) return;
  const passes = visibleBut();
  const states = new Set(
    [...document.querySelectorAll("#f-states input")]
      .filter((box) => box.checked)
      .map((box) => layout.states.indexOf(box.value)),
  );
  grid.setFilter((cell) => passes(cell) && states.has(grid.codes[cell] >> 3));
  countStates();
  if (!$("table-view").hidden) fillTable();
}

// -- the grid as text -------------------------------------------------------------------

const TABLE_ROWS = 500;

function fillTable() {
  const cells = [];
  for (let cell = 0; cell < layout.cells; cell++) if (grid.visible(cell)) cells.push(cell);
  const shown = cells.slice(0, TABLE_ROWS);
  const rows = shown.map((cell) => {
    const row = document.createElement("tr");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "link";
    open.textContent = layout.names[cell];
    open.addEventListener("click", () => openServer(layout.names[cell]));
    const th = document.createElement("th");
    th.scope = "row";
    th.append(open);
    row.append(th);
    const state = layout.states[grid.codes[cell] >> 3];
    for (const text of [fleetOf(cell), layout.workers?.[cell] ?? "–", state]) {
      const td = document.createElement("td");
      td.textContent = String(text);
      row.append(td);
    }
    const kinds = kindsOf(grid.masks[cell], grid.kinds);
    const faults = document.createElement("td");
    kinds.forEach((kind, i) => faults.append(...(i ? [", "] : []), kindBadge(kind)));
    const rate = document.createElement("td");
    rate.textContent = rateText(cell);
    row.append(faults, rate);
    row.dataset.kinds = kinds.join(" ");
    row.dataset.state = state;
    return row;
  });
  const table = $("server-table");
  table.querySelector("tbody").replaceChildren(...rows);
  table.querySelector("caption").textContent =
    cells.length > TABLE_ROWS
      ? `the first ${TABLE_ROWS} of ${number.format(cells.length)} servers the filters show: narrow them to see the rest`
      : `${number.format(cells.length)} server${cells.length === 1 ? "" : "s"} the filters show`;
}

function fleetOf(cell) {
  return layout.groups.find((group) => cell >= group.start && cell < group.start + group.count)?.fleet ?? "";
}

function rateText(cell) {
  const bounds = layout.rate_bounds;
  const bucket = grid.codes[cell] & 7;
  if (bucket === 0) return "idle";
  return bucket < bounds.length ? `up to ${bounds[bucket]}` : `over ${bounds[bounds.length - 1]}`;
}

function toggleTable() {
  const button = $("view-toggle");
  const table = button.getAttribute("aria-pressed") !== "true";
  button.setAttribute("aria-pressed", String(table));
  button.textContent = table ? "show as a grid" : "show as a table";
  $("table-view").hidden = !table;
  $("grid").hidden = table;
  if (table) fillTable();
  else grid.relayout();
}

// -- search -----------------------------------------------------------------------------

let active = -1; // the suggestion the arrow keys are on

function suggest() {
  const list = $("suggestions");
  const text = $("search").value;
  active = -1;
  if (!layout || !text.trim()) return closeSuggestions();
  const ok = matcher(text);
  const found = layout.names.filter(ok).sort(naturalCompare).slice(0, 8);
  list.replaceChildren(
    ...found.map((name, index) => {
      const item = document.createElement("li");
      item.id = `suggestion-${index}`;
      item.setAttribute("role", "option");
      item.setAttribute("aria-selected", "false");
      item.textContent = name;
      item.addEventListener("mousedown", (event) => {
        event.preventDefault(); // keep the focus in the field
        openServer(name);
      });
      return item;
    }),
  );
  $("search").setAttribute("aria-expanded", String(found.length > 0));
}

function closeSuggestions() {
  $("suggestions").replaceChildren();
  $("search").setAttribute("aria-expanded", "false");
  $("search").removeAttribute("aria-activedescendant");
  active = -1;
}

function moveSuggestion(event) {
  const items = [...$("suggestions").children];
  if (event.key === "Escape" && items.length) {
    event.preventDefault();
    event.stopPropagation();
    closeSuggestions();
    return;
  }
  if (!items.length || !["ArrowDown", "ArrowUp", "Enter"].includes(event.key)) return;
  if (event.key === "Enter") {
    if (active < 0) return; // the form's own submit: the first match
    event.preventDefault();
    openServer(items[active].textContent);
    return;
  }
  event.preventDefault();
  active = (active + (event.key === "ArrowDown" ? 1 : -1) + items.length) % items.length;
  items.forEach((item, index) => item.setAttribute("aria-selected", String(index === active)));
  $("search").setAttribute("aria-activedescendant", items[active].id);
}

function search(event) {
  event.preventDefault();
  const text = $("search").value.trim();
  if (!layout || !text) return;
  const name = grid.index.has(text) ? text : layout.names.filter(matcher(text)).sort(naturalCompare)[0];
  $("search-result").textContent = name ? "" : `no server matches ${text}`;
  if (name) openServer(name);
}

// -- one server -------------------------------------------------------------------------

function stateOf(name) {
  const cell = grid.index.get(name);
  return cell === undefined ? null : layout.states[grid.codes[cell] >> 3];
}

function openServer(name) {
  const cell = grid.index.get(name);
  if (cell === undefined) return;
  grid.select(cell);
  const centre = grid.centre(cell);
  if (centre) $("fleet").scrollTo({ top: Math.max(0, centre.y - 100), behavior: "smooth" });
  closeSuggestions();
  history.replaceState(null, "", `#server=${encodeURIComponent(name)}`);
  panel.open(name, stateOf(name));
}

function closeServer() {
  grid.select(-1);
  history.replaceState(null, "", location.pathname);
}

function restoreFromHash() {
  const match = location.hash.match(/^#server=(.+)$/);
  if (match) openServer(decodeURIComponent(match[1]));
}

function describeCell(cell) {
  const bounds = layout.rate_bounds;
  const bucket = grid.codes[cell] & 7;
  const rate =
    bucket === 0
      ? "idle"
      : bucket < bounds.length
        ? `up to ${bounds[bucket]} requests/s`
        : `over ${bounds[bounds.length - 1]} requests/s`;
  const kinds = kindsOf(grid.masks[cell], grid.kinds);
  const state = layout.states[grid.codes[cell] >> 3] + (kinds.length ? ` (${kinds.join(", ")})` : "");
  return `${layout.names[cell]} · ${state} · ${rate}`;
}

// A legend entry per fault kind: its letter as the cells show it, and its name.
function fillKindLegend(kinds) {
  const entries = kinds.map(({ kind }) => kindBadge(kind));
  const several = markBadge(SEVERAL, "several kinds");
  const words = kinds.length ? "fault kinds, the letter in a faulted cell:" : "";
  $("kind-legend").replaceChildren(words, ...entries.flatMap((entry) => [" ", entry]), " ", several);
}

function toggleCells() {
  const button = $("cells-toggle");
  const large = button.getAttribute("aria-pressed") !== "true";
  button.setAttribute("aria-pressed", String(large));
  grid.setLarge(large);
}

function wireCanvas() {
  const canvas = $("grid");
  const tip = $("tip");
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return grid.cellAt(event.clientX - box.left, event.clientY - box.top);
  };
  canvas.addEventListener("mousemove", (event) => {
    const cell = point(event);
    tip.hidden = cell < 0;
    if (cell < 0) return;
    tip.textContent = describeCell(cell);
    tip.style.left = `${event.clientX + 12}px`;
    tip.style.top = `${event.clientY + 12}px`;
  });
  canvas.addEventListener("mouseleave", () => {
    tip.hidden = true;
  });
  canvas.addEventListener("click", (event) => {
    const cell = point(event);
    if (cell >= 0) openServer(layout.names[cell]);
  });
}

// For tests and the curious: where a server's cell is on the page, its state, and how each
// state is drawn.
window.farmView = {
  palette: {
    background: BACKGROUND,
    states: STATE_COLOURS,
    shades: PALETTE,
    shapes: SHAPES,
    marks: MARK_COLOURS,
    drawable: DRAWABLE,
  },
  cellCentre(name) {
    const centre = grid.centre(grid.index?.get(name) ?? -1);
    if (!centre) return null;
    const box = $("grid").getBoundingClientRect();
    return { x: box.left + centre.x, y: box.top + centre.y };
  },
  // Where a server's cell is drawn on the canvas (its CSS pixels), to read its pixels back.
  cellBox(name) {
    const cell = grid.index?.get(name) ?? -1;
    if (cell < 0 || grid.x[cell] < 0) return null;
    return { x: grid.x[cell], y: grid.y[cell], size: grid.pitch - 2 };
  },
  stateOf,
  // The fault kinds on a server's cell, and the letter the cell shows ("" for none).
  kindsOf(name) {
    const cell = grid.index?.get(name);
    return cell === undefined ? null : kindsOf(grid.masks[cell], grid.kinds);
  },
  markOf(name) {
    const cell = grid.index?.get(name);
    return cell === undefined ? null : markOf(grid.masks[cell], grid.kinds);
  },
};

$("f-fleet").addEventListener("change", applyFilters);
$("f-name").addEventListener("input", applyFilters);
for (const box of document.querySelectorAll("#f-states input")) {
  box.addEventListener("change", applyFilters);
}
$("search").addEventListener("input", suggest);
$("search").addEventListener("keydown", moveSuggestion);
$("search").addEventListener("blur", () => setTimeout(closeSuggestions, 100));
$("search-form").addEventListener("submit", search);
$("view-toggle").addEventListener("click", toggleTable);
$("cells-toggle").addEventListener("click", toggleCells);
// Escape closes what is open: the suggestions first (above), then the server's panel.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented) return;
  if (document.querySelector("dialog[open]")) return; // the dialog closes itself
  if (panel.name) panel.close();
});
setInterval(watch, 250);
$("server").addEventListener("close-server", closeServer);
// The panel opening, or the window resizing, changes how many cells fit across.
new ResizeObserver(() => grid.relayout()).observe($("fleet"));
wireCanvas();
connect();
