// One server's panel: its units, points with live values (marked when a value fault acts on
// them), requests per function code, latency, its last five minutes as small charts, why it
// is down, and active faults, with controls to apply or clear a fault and to write a point.
// Everything comes from, and goes through, the control API; the panel refreshes once a
// second, and stops when the server is gone.

import { ApiError, call, get } from "./api.js";
import { FaultForm, clearFault, faultItem } from "./faults.js";
import { chart } from "./charts.js";
import { formatValue, seconds } from "./words.js";

const REFRESH_MS = 1000;
const FUNCTIONS = {
  1: "read coils",
  2: "read discrete inputs",
  3: "read holding registers",
  4: "read input registers",
  5: "write single coil",
  6: "write single register",
  15: "write multiple coils",
  16: "write multiple registers",
  22: "mask write register",
  23: "read/write multiple registers",
  43: "read device identification",
  other: "other function codes",
};

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function row(...cells) {
  return element("tr", {}, ...cells.map((cell) => (cell instanceof Node ? element("td", {}, cell) : element("td", { textContent: String(cell) }))));
}

const path = (name) => `/api/v1/servers/${encodeURIComponent(name)}`;

export class ServerPanel {
  constructor(root, onOpen) {
    this.root = root;
    this.onOpen = onOpen;
    this.name = null;
    this.generation = 0;
    this.timer = 0;
    this.last = null; // the previous counters, for rates per function code
    this.failing = false; // the message shown is a failed refresh's: the next success clears it
    this.pointNames = [];
    this.writes = [];
    this.writeSeq = 0;
    this.faultForm = new FaultForm(root.querySelector("#fault-form"), {
      target: () => ({ servers: [this.name] }),
      points: () => this.pointNames,
      say: (text, ok) => this.say(text, ok),
      changed: () => this.refresh(),
    });
    root.querySelector(".close").addEventListener("click", () => this.close());
    for (const button of root.querySelectorAll("#s-switch button")) {
      button.addEventListener("click", () => this.switch(button.value));
    }
  }

  // Stop or start the server (its port closes or opens again, values kept).
  async switch(action) {
    try {
      const done = await call("POST", `${path(this.name)}/${action}`);
      this.say(`${this.name}: ${done.changed ? `${action === "stop" ? "stopped" : "started"}` : `already ${done.state}`}`);
      this.refresh();
    } catch (error) {
      this.say(`${action}: ${error instanceof ApiError ? error.message : error}`, false);
    }
  }

  open(name, state) {
    this.name = name;
    this.generation++;
    this.last = null;
    this.root.hidden = false;
    this.root.dataset.server = name;
    this.root.querySelector("h2").textContent = name;
    this.root.querySelector("#points tbody").replaceChildren();
    this.root.querySelector("#charts").replaceChildren();
    this.root.querySelector("#s-reason").hidden = true;
    this.pointNames = [];
    this.writes = [];
    this.writeSeq = 0;
    this.say("");
    this.setState(state);
    this.faultForm.reset();
    this.refresh();
  }

  close() {
    this.name = null;
    this.generation++;
    clearTimeout(this.timer);
    this.root.hidden = true;
    this.root.dispatchEvent(new Event("close-server"));
  }

  setState(state) {
    const badge = this.root.querySelector("#s-state");
    badge.textContent = state ?? "–";
    badge.dataset.state = state ?? "";
  }

  say(text, ok = true) {
    const line = this.root.querySelector("#server-message");
    line.textContent = text;
    line.classList.toggle("error", !ok);
    this.failing = false;
  }

  async refresh() {
    clearTimeout(this.timer);
    const { name, generation } = this;
    if (!name) return;
    // The detail first: a server scaled away is one 404, not one for every call.
    const [detail] = await Promise.allSettled([get(path(name))]);
    if (generation !== this.generation) return; // another server was opened meanwhile
    if (detail.status === "rejected" && detail.reason.status === 404) {
      // Scaled away or renamed: asking again every second would only repeat the 404.
      this.say(`${name} is no longer in the farm (its fleet was scaled down?); close the panel`, false);
      this.setState(null);
      return;
    }
    const [counters, history, clients, writes] = await Promise.allSettled([
      get(`${path(name)}/counters`),
      get(`${path(name)}/history`),
      get(`/api/v1/clients?server=${encodeURIComponent(name)}`),
      get(`${path(name)}/writes?after=${this.writeSeq}`),
    ]);
    if (generation !== this.generation) return;
    if (counters.status === "fulfilled") this.showCounters(counters.value);
    if (history.status === "fulfilled") this.showHistory(history.value);
    this.showJournal(clients, writes);
    if (detail.status === "fulfilled") {
      this.showDetail(detail.value);
      if (this.failing) this.say(""); // the farm answers again: the old error is not true now
    } else {
      this.say(`server detail: ${detail.reason.message}`, false);
      this.failing = true;
    }
    this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  // The clients polling it and its last writes (GET /api/v1/clients, .../writes): what the
  // system under test did to this device.
  showJournal(clients, writes) {
    const section = this.root.querySelector("#s-journal");
    section.hidden = clients.status !== "fulfilled" && writes.status !== "fulfilled";
    if (clients.status === "fulfilled") {
      const rows = (clients.value.clients ?? []).map((client) => {
        const poll = (client.polls ?? []).find((p) => p.server === this.name);
        const every = poll ? `, every ${seconds(poll.p50_s)} (p99 ${seconds(poll.p99_s)})` : "";
        return element("li", {
          textContent: `${client.client}: ${client.requests_per_s.toFixed(1)} requests/s${every}`,
        });
      });
      if (!rows.length) rows.push(element("li", { textContent: "no client has polled it", className: "muted" }));
      this.root.querySelector("#clients").replaceChildren(...rows);
    }
    if (writes.status === "fulfilled") {
      const page = writes.value;
      this.writes = [...this.writes, ...(page.writes ?? [])].slice(-5);
      this.writeSeq = page.next ?? this.writeSeq;
      const rows = this.writes
        .slice()
        .reverse()
        .map((write) => {
          const when = new Date(write.time * 1000).toLocaleTimeString("en-GB", { hour12: false });
          const what = Object.keys(write.points ?? {}).length
            ? Object.entries(write.points).map(([point, value]) => `${point} = ${formatValue(value)}`).join(", ")
            : `${write.table}:${write.address} = ${write.values.join(", ")}`;
          return element("li", { textContent: `${when} ${write.client}: ${what}` });
        });
      if (!rows.length) rows.push(element("li", { textContent: "no write yet", className: "muted" }));
      this.root.querySelector("#writes").replaceChildren(...rows);
    }
  }

  showHistory(history) {
    const minutes = ((history.requests_per_s.length * history.interval_s) / 60).toFixed(1);
    this.root.querySelector("#charts").replaceChildren(
      chart("requests/s", history.requests_per_s, (v) => v.toFixed(1), minutes),
      chart("errors/s", history.errors_per_s, (v) => v.toFixed(1), minutes),
      chart("latency (mean)", history.latency_s, seconds, minutes),
    );
  }

  showCounters(counters) {
    const summary = this.root.querySelector("#s-summary");
    summary.querySelector(".address").textContent = counters.address;
    summary.querySelector(".fleet").textContent = counters.fleet;
    summary.querySelector(".worker").textContent = counters.worker;
    summary.querySelector(".template").textContent = counters.template;
    summary.querySelector(".rate").textContent = counters.requests_per_s ?? "–";
    summary.querySelector(".latency").textContent =
      counters.latency_p50_s == null ? "no request yet" : `${seconds(counters.latency_p50_s)} / ${seconds(counters.latency_p99_s)}`;
    summary.querySelector(".connections").textContent = counters.connections_open;
    const now = performance.now();
    const before = this.last;
    this.last = { at: now, counters };
    const rate = (code) => {
      if (!before) return "–";
      const seconds = (now - before.at) / 1000;
      const delta = (counters.requests[code] ?? 0) - (before.counters.requests[code] ?? 0);
      return (delta / seconds).toFixed(1);
    };
    const requests = Object.entries(counters.requests).map(([code, count]) =>
      row(code, FUNCTIONS[code] ?? "", count, rate(code)),
    );
    this.root.querySelector("#requests tbody").replaceChildren(...requests);
    const exceptions = Object.entries(counters.exceptions).map(([code, count]) => row(code, count));
    this.root.querySelector("#exceptions tbody").replaceChildren(...exceptions);
  }

  showDetail(detail) {
    const units = (detail.units ?? []).map((unit) => {
      const sizes = ["coils", "discrete_inputs", "holding_registers", "input_registers"]
        .map((table) => `${unit[table] ?? 0} ${table.replace("_", " ")}`)
        .join(", ");
      return element("li", { textContent: `unit ${unit.unit_id ?? unit.unit}: ${sizes}` });
    });
    this.root.querySelector("#units").replaceChildren(...units);
    this.root.querySelector("#s-switch").dataset.stopped = String(Boolean(detail.stopped));
    this.showReason(detail);
    const faults = detail.faults ?? [];
    const names = (detail.points ?? []).map((point) => point.name);
    if (names.join() !== this.pointNames.join()) {
      this.pointNames = names;
      this.faultForm.showParams(); // the point picker lists this server's points
    }
    this.showPoints(detail.points ?? [], faults);
    this.showFaults(faults);
  }

  // Why it is down, when it is: the farm's own words (could not bind its port, stopped
  // through the API, its worker restarting, an offline fault).
  showReason(detail) {
    const line = this.root.querySelector("#s-reason");
    const reason =
      detail.error ?? detail.reason ?? detail.down_reason ??
      (detail.stopped ? "stopped: its port is closed (the API, or an offline fault)" : !detail.up ? "its worker is not serving it (restarting?)" : null);
    line.hidden = !reason || detail.state !== "offline";
    line.textContent = reason ? `down: ${reason}` : "";
  }

  showFaults(faults) {
    const items = faults.map((fault) => faultItem(fault, (id) => clearFault(id, (t, ok) => this.say(t, ok), () => this.refresh())));
    if (!items.length) items.push(element("li", { textContent: "none", className: "muted" }));
    this.root.querySelector("#active-faults").replaceChildren(...items);
  }

  // Values as clients read them; a value fault's point says so (a stuck 260 is not a 260
  // the device measured).
  showPoints(points, faults) {
    const faulted = new Map();
    for (const fault of faults) {
      const point = fault.spec?.point ?? fault.point;
      if (point) faulted.set(point, fault.kind);
    }
    const body = this.root.querySelector("#points tbody");
    const rows = new Map([...body.children].map((tr) => [tr.dataset.point, tr]));
    const ordered = points.map((point) => {
      let tr = rows.get(point.name);
      if (!tr) tr = this.pointRow(point);
      const cell = tr.querySelector(".value");
      const kind = faulted.get(point.name);
      cell.textContent = formatValue(point.value);
      if (kind) cell.append(" ", element("span", { className: "value-fault", textContent: `${kind} fault` }));
      tr.dataset.faulted = kind ?? "";
      return tr;
    });
    body.replaceChildren(...ordered);
  }

  pointRow(point) {
    const where = `${point.table}:${point.address}${point.unit !== undefined ? ` (unit ${point.unit})` : ""}`;
    const tr = row(point.name, where, point.type, "");
    tr.dataset.point = point.name;
    tr.children[3].className = "value";
    // The API writes as the operator: every point, read-only ones (to clients) too.
    const input = element("input", { name: "value", size: 8, placeholder: "value" });
    input.setAttribute("aria-label", `new value for ${point.name}`);
    if (!point.writable) input.title = "read-only to Modbus clients; the API may write it";
    const button = element("button", { textContent: "set" });
    button.setAttribute("aria-label", `set ${point.name}`);
    const form = element("form", { className: "write" }, input, button);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.write(point, input);
    });
    tr.append(element("td", {}, form));
    return tr;
  }

  async write(point, input) {
    const value = parseValue(point.type, input.value);
    if (value === undefined) {
      this.say(`${point.name}: ${JSON.stringify(input.value)} is not a ${point.type}`, false);
      return;
    }
    try {
      await call("PUT", `${path(this.name)}/points/${encodeURIComponent(point.name)}`, { value });
      this.say(`${point.name} set to ${formatValue(value)}`);
      input.value = "";
      this.refresh();
    } catch (error) {
      this.say(`${point.name}: ${error instanceof ApiError ? error.message : error}`, false);
    }
  }
}

// The value a point's type wants from what the user typed, or undefined.
function parseValue(type, text) {
  const trimmed = text.trim();
  if (type === "string") return text;
  if (type === "bool") {
    if (["1", "true", "on"].includes(trimmed.toLowerCase())) return true;
    if (["0", "false", "off"].includes(trimmed.toLowerCase())) return false;
    return undefined;
  }
  if (!trimmed) return undefined;
  const number = Number(trimmed);
  return Number.isFinite(number) ? number : undefined;
}
