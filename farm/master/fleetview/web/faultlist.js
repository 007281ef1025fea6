// The farm's faults, all of them: the list with a clear button each and "clear all", and a
// form that puts a fault on a fleet, on the servers a name pattern or a list of names picks,
// or on a seeded fraction of them. GET /api/v1/faults every 2 s while the list is open.

import { ApiError, call, get } from "./api.js";
import { FaultForm, clearFault, faultItem } from "./faults.js";

const REFRESH_MS = 2000;

export class FarmFaults {
  constructor(root) {
    this.root = root;
    this.timer = 0;
    this.toggle = document.getElementById("faults-toggle");
    this.toggle.addEventListener("click", () => (this.root.hidden ? this.open() : this.close()));
    this.message = root.querySelector("#farm-fault-message");
    const form = root.querySelector("#farm-fault-form");
    this.targetForm = form;
    form.querySelector("[name=target-kind]").addEventListener("change", () => this.showTarget());
    this.form = new FaultForm(form, {
      target: () => this.target(),
      points: () => null,
      say: (text, ok) => this.say(text, ok),
      changed: () => this.refresh(),
    });
    root.querySelector("#clear-all").addEventListener("click", () => this.clearAll());
  }

  setFleets(fleets) {
    const select = this.targetForm.querySelector("[name=fleet]");
    const chosen = select.value;
    select.replaceChildren(...fleets.map((fleet) => new Option(fleet, fleet)));
    if (fleets.includes(chosen)) select.value = chosen;
  }

  showTarget() {
    const kind = this.targetForm.querySelector("[name=target-kind]").value;
    for (const each of ["fleet", "glob", "servers"]) {
      this.targetForm.querySelector(`.t-${each}`).hidden = each !== kind;
    }
  }

  // The API's target object from the form: {fleet} | {glob} | {servers}, with a fraction
  // and its seed when one is given.
  target() {
    const form = this.targetForm;
    const kind = form.querySelector("[name=target-kind]").value;
    const target = {};
    if (kind === "fleet") target.fleet = form.querySelector("[name=fleet]").value;
    if (kind === "glob") target.glob = form.querySelector("[name=glob]").value.trim();
    if (kind === "servers") {
      target.servers = form
        .querySelector("[name=servers]")
        .value.split(/[\s,]+/)
        .filter(Boolean);
    }
    const fraction = form.querySelector("[name=fraction]").value.trim();
    if (fraction) {
      target.fraction = Number(fraction);
      target.seed = Number(form.querySelector("[name=seed]").value || 0);
    }
    return target;
  }

  open() {
    this.root.hidden = false;
    this.toggle.setAttribute("aria-expanded", "true");
    this.form.reset();
    this.refresh();
  }

  close() {
    this.root.hidden = true;
    this.toggle.setAttribute("aria-expanded", "false");
    clearTimeout(this.timer);
  }

  say(text, ok = true) {
    this.message.textContent = text;
    this.message.classList.toggle("error", !ok);
  }

  async refresh() {
    clearTimeout(this.timer);
    if (this.root.hidden) return;
    try {
      const { faults } = await get("/api/v1/faults");
      const items = faults.map((fault) => {
        const item = faultItem(fault, (id) => clearFault(id, (t, ok) => this.say(t, ok), () => this.refresh()));
        const servers = fault.servers ?? [];
        const on = servers.length <= 3 ? servers.join(", ") : `${servers.length} servers (${servers.slice(0, 3).join(", ")}, ...)`;
        item.insertBefore(document.createTextNode(`on ${on} `), item.lastChild);
        return item;
      });
      if (!items.length) items.push(Object.assign(document.createElement("li"), { textContent: "none", className: "muted" }));
      this.root.querySelector("#fault-list").replaceChildren(...items);
      this.root.querySelector("#clear-all").disabled = faults.length === 0;
    } catch (error) {
      this.say(`faults: ${error instanceof ApiError ? error.message : error}`, false);
    }
    this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  async clearAll() {
    try {
      const done = await call("DELETE", "/api/v1/faults");
      const count = done?.cleared?.length ?? 0;
      this.say(`cleared ${count} fault${count === 1 ? "" : "s"}`);
    } catch (error) {
      this.say(`clear all: ${error instanceof ApiError ? error.message : error}`, false);
    }
    this.refresh();
  }
}
