// One server's panel: its units, points with live values, requests per function code and
// active faults, with controls to apply or clear a fault and to write a point. Everything
// comes from, and goes through, the control API; the panel refreshes once a second.

import { ApiError, call, get } from "./api.js";
import { FaultForm } from "./faults.js";

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
    this.faultForm = new FaultForm(root.querySelector("#fault-form"), () => this.name, (text, ok) =>
      this.say(text, ok),
    () => this.refresh());
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
  }

  async refresh() {
    clearTimeout(this.timer);
    const { name, generation } = this;
    if (!name) return;
    const [counters, detail] = await Promise.allSettled([get(`${path(name)}/counters`), get(path(name))]);
    if (generation !== this.generation) return; // another server was opened meanwhile
    if (counters.status === "fulfilled") this.showCounters(counters.value);
    if (detail.status === "fulfilled") this.showDetail(detail.value);
    else this.say(`server detail: ${detail.reason.message}`, false);
    this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  showCounters(counters) {
    const summary = this.root.querySelector("#s-summary");
    summary.querySelector(".address").textContent = counters.address;
    summary.querySelector(".fleet").textContent = counters.fleet;
    summary.querySelector(".worker").textContent = counters.worker;
    summary.querySelector(".template").textContent = counters.template;
    summary.querySelector(".rate").textContent = counters.requests_per_s ?? "–";
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
    this.showPoints(detail.points ?? []);
    this.faultForm.showActive(detail.faults ?? []);
  }

  showPoints(points) {
    const body = this.root.querySelector("#points tbody");
    const rows = new Map([...body.children].map((tr) => [tr.dataset.point, tr]));
    const ordered = points.map((point) => {
      let tr = rows.get(point.name);
      if (!tr) tr = this.pointRow(point);
      tr.querySelector(".value").textContent = formatValue(point.value);
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
    if (!point.writable) input.title = "read-only to Modbus clients; the API may write it";
    const form = element("form", { className: "write" }, input, element("button", { textContent: "set" }));
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

function formatValue(value) {
  if (typeof value === "number" && !Number.isInteger(value)) return String(Number(value.toPrecision(7)));
  return typeof value === "string" ? JSON.stringify(value) : String(value);
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
