// The fleet view: the live stream from the master (GET /api/v1/view/stream, server-sent
// events), the grid, the farm totals, filters and search. A click on a cell opens the
// server's panel (server.js).

import { Grid } from "./grid.js";
import { ServerPanel } from "./server.js";

const $ = (id) => document.getElementById(id);
const grid = new Grid($("grid"));
const panel = new ServerPanel($("server"), (name) => openServer(name));
let layout = null;
let seq = 0;

// -- the stream -------------------------------------------------------------------------

function connect() {
  const source = new EventSource("/api/v1/view/stream");
  source.addEventListener("layout", (event) => {
    // First on every connection, and again whenever a fleet is scaled: cells are renumbered,
    // so the filters and the open server's cell are worked out again from names.
    layout = JSON.parse(event.data);
    grid.setLayout(layout);
    fillFleets(layout);
    applyFilters();
    if (panel.name) grid.select(grid.index.get(panel.name) ?? -1);
    else restoreFromHash();
  });
  source.addEventListener("snapshot", (event) => {
    const data = JSON.parse(event.data);
    const bytes = atob(data.codes);
    const codes = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) codes[i] = bytes.charCodeAt(i);
    grid.setCodes(codes);
    update(data);
  });
  source.addEventListener("tick", (event) => {
    const data = JSON.parse(event.data);
    if (data.seq !== seq + 1) return; // cannot happen on one connection; a reconnect resyncs
    if (grid.apply(data.cells) && !allStates()) grid.relayout();
    update(data);
  });
  source.addEventListener("open", () => setLink("live"));
  source.addEventListener("error", () => setLink("reconnecting…"));
}

function update(data) {
  seq = data.seq;
  document.body.dataset.seq = String(seq);
  showTotals(data.totals);
  countStates();
  if (panel.name) panel.setState(stateOf(panel.name));
}

function setLink(text) {
  $("t-link").textContent = text;
  document.body.dataset.link = text === "live" ? "live" : "down";
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

function countStates() {
  const counts = [0, 0, 0, 0];
  for (const code of grid.codes) counts[code >> 3]++;
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

function applyFilters() {
  if (!layout) return;
  const fleet = $("f-fleet").value;
  const nameOk = matcher($("f-name").value);
  const states = new Set(
    [...document.querySelectorAll("#f-states input")]
      .filter((box) => box.checked)
      .map((box) => layout.states.indexOf(box.value)),
  );
  const fleetOf = new Array(layout.cells);
  for (const group of layout.groups) fleetOf.fill(group.fleet, group.start, group.start + group.count);
  grid.setFilter(
    (cell) =>
      (!fleet || fleetOf[cell] === fleet) &&
      states.has(grid.codes[cell] >> 3) &&
      nameOk(layout.names[cell]),
  );
}

function suggest() {
  const list = $("suggestions");
  const text = $("search").value;
  if (!layout || !text.trim()) return list.replaceChildren();
  const ok = matcher(text);
  const found = [];
  for (const name of layout.names) {
    if (ok(name)) found.push(name);
    if (found.length === 8) break;
  }
  list.replaceChildren(
    ...found.map((name) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = name;
      button.addEventListener("click", () => openServer(name));
      item.append(button);
      return item;
    }),
  );
}

function search(event) {
  event.preventDefault();
  const text = $("search").value.trim();
  if (!layout || !text) return;
  const name = grid.index.has(text) ? text : layout.names.find(matcher(text));
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
  $("suggestions").replaceChildren();
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
  return `${layout.names[cell]} · ${layout.states[grid.codes[cell] >> 3]} · ${rate}`;
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

// For tests and the curious: where a server's cell is on the page, and its state.
window.farmView = {
  cellCentre(name) {
    const centre = grid.centre(grid.index?.get(name) ?? -1);
    if (!centre) return null;
    const box = $("grid").getBoundingClientRect();
    return { x: box.left + centre.x, y: box.top + centre.y };
  },
  stateOf,
};

$("f-fleet").addEventListener("change", applyFilters);
$("f-name").addEventListener("input", applyFilters);
for (const box of document.querySelectorAll("#f-states input")) {
  box.addEventListener("change", applyFilters);
}
$("search").addEventListener("input", suggest);
$("search-form").addEventListener("submit", search);
$("server").addEventListener("close-server", closeServer);
// The panel opening, or the window resizing, changes how many cells fit across.
new ResizeObserver(() => grid.relayout()).observe($("fleet"));
wireCanvas();
connect();
