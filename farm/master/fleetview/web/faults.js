// The fault forms: one in a server's panel (for that server), one in the farm's fault list
// (for a fleet, a name pattern or names, or a seeded fraction of them). The kinds of fault
// and their parameters are read from the control API's own OpenAPI document, so a form offers
// exactly what the API accepts for the chosen kind, and nothing here names a kind; applying
// is POST /api/v1/faults, clearing DELETE /api/v1/faults/{id}.

import { ApiError, call, get } from "./api.js";
import { kindBadge } from "./marks.js";
import { label } from "./words.js";

// Fields the form sets itself (kind, target) or leaves to the CLI (narrowing to function
// codes, a unit or addresses); the ones in WHEN are offered after a kind's own parameters,
// when its schema has them.
const SET_BY_FORM = new Set(["kind", "target", "function_codes", "unit", "addresses"]);
const WHEN = ["probability", "start_in", "duration"];
const WHEN_LABELS = {
  probability: { text: "probability per request", unit: "0-1", placeholder: "1" },
  start_in: { text: "starts in", unit: "", placeholder: "now (e.g. 10s)" },
  duration: { text: "for", unit: "", placeholder: "until cleared (e.g. 30s)" },
};
// Parameters that narrow a fault to some clients only: last, with what they mean.
const LAST = { role: "only clients whose TLS certificate names the role" };

// The fault kinds the API documents: [{kind, params: [{name, schema, required}], when}].
export function faultKinds(document) {
  const schemas = document?.components?.schemas ?? {};
  const kinds = [];
  for (const schema of Object.values(schemas)) {
    const kind = schema?.properties?.kind;
    const value = kind?.const ?? (kind?.enum?.length === 1 ? kind.enum[0] : undefined);
    if (typeof value !== "string" || !schema.properties.target) continue;
    const required = new Set(schema.required ?? []);
    const names = Object.keys(schema.properties);
    const params = names
      .filter((name) => !SET_BY_FORM.has(name) && !WHEN.includes(name))
      .sort((a, b) => (a in LAST) - (b in LAST))
      .map((name) => ({ name, schema: schema.properties[name], required: required.has(name) }));
    kinds.push({ kind: value, params, when: WHEN.filter((name) => names.includes(name)) });
  }
  return kinds.sort((a, b) => a.kind.localeCompare(b.kind));
}

let kindsOnce = null;

// The kinds, read once per page.
export function loadKinds() {
  kindsOnce ??= get("/api/v1/openapi.json")
    .then(faultKinds)
    .catch(() => []);
  return kindsOnce;
}

function field(param, points) {
  const schema = param.schema ?? {};
  const choices = schema.enum ?? schema.anyOf?.find((s) => s.enum)?.enum;
  let input;
  if (param.name === "point" && points?.length) {
    input = document.createElement("select"); // the server's points, not a free text
    for (const point of points) input.append(new Option(point, point));
  } else if (choices) {
    input = document.createElement("select");
    for (const choice of choices) input.append(new Option(choice, choice));
  } else {
    input = document.createElement("input");
    const type = schema.type ?? schema.anyOf?.find((s) => s.type && s.type !== "null")?.type;
    const numeric = ["number", "integer"].includes(type);
    input.type = numeric ? "number" : "text";
    input.dataset.type = type ?? "string";
    if (numeric) input.step = type === "integer" ? "1" : "any";
    if (schema.minimum !== undefined) input.min = String(schema.minimum);
    if (schema.maximum !== undefined) input.max = String(schema.maximum);
  }
  input.name = param.name;
  input.dataset.type ??= schema.type ?? "string";
  if (schema.default !== undefined && schema.default !== null) input.value = String(schema.default);
  input.required = param.required;
  const words = label(param.name, schema);
  const text = LAST[param.name] ?? words.text;
  const wrapper = document.createElement("label");
  wrapper.append(`${text}${words.unit ? ` (${words.unit})` : ""} `, input);
  if (words.help) wrapper.title = words.help;
  return wrapper;
}

function whenField(name) {
  const words = WHEN_LABELS[name];
  const input = document.createElement("input");
  input.name = name;
  input.placeholder = words.placeholder;
  input.dataset.type = name === "probability" ? "number" : "string";
  if (name === "probability") Object.assign(input, { type: "number", min: "0", max: "1", step: "any" });
  const wrapper = document.createElement("label");
  wrapper.append(`${words.text}${words.unit ? ` (${words.unit})` : ""} `, input);
  return wrapper;
}

export class FaultForm {
  // target(): the API's target object; points(): the point names to pick from (or null);
  // say(text, ok): where the outcome is told; changed(): after a fault was applied.
  constructor(form, { target, points, say, changed }) {
    this.form = form;
    this.target = target;
    this.points = points;
    this.say = say;
    this.changed = changed;
    this.kinds = null;
    this.select = form.querySelector("select[name=kind]");
    this.select.addEventListener("change", () => this.showParams());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.apply();
    });
  }

  async reset() {
    if (this.kinds === null) {
      this.kinds = await loadKinds();
      this.select.replaceChildren(...this.kinds.map(({ kind }) => new Option(kind, kind)));
    }
    this.form.hidden = this.kinds.length === 0;
    this.showParams();
  }

  // Only the chosen kind's fields, fresh: nothing carries over from another kind.
  showParams() {
    const kind = this.kinds?.find((k) => k.kind === this.select.value);
    const points = this.points?.() ?? null;
    this.form.querySelector(".params").replaceChildren(...(kind ? kind.params.map((p) => field(p, points)) : []));
    this.form.querySelector(".common").replaceChildren(...(kind ? kind.when.map(whenField) : []));
  }

  body() {
    const body = { kind: this.select.value, target: this.target() };
    for (const input of this.form.querySelectorAll(".params [name], .common [name]")) {
      const value = input.value.trim();
      if (value === "") continue;
      const numeric = ["number", "integer"].includes(input.dataset.type);
      body[input.name] = numeric ? Number(value) : value;
    }
    return body;
  }

  async apply() {
    let body;
    try {
      body = this.body();
    } catch (error) {
      this.say(`fault: ${error.message}`, false);
      return;
    }
    try {
      const fault = await call("POST", "/api/v1/faults", body);
      const count = fault?.servers?.length ?? 0;
      this.say(`fault ${fault?.id ?? ""} applied: ${body.kind} on ${count} server${count === 1 ? "" : "s"}`);
      this.changed();
    } catch (error) {
      this.say(`fault: ${error instanceof ApiError ? error.message : error}`, false);
    }
  }
}

export async function clearFault(id, say, changed) {
  try {
    await call("DELETE", `/api/v1/faults/${encodeURIComponent(id)}`);
    say(`fault ${id} cleared`);
    changed();
  } catch (error) {
    say(`fault ${id}: ${error instanceof ApiError ? error.message : error}`, false);
  }
}

// One fault as a list item: its kind, its parameters and where it stands, and a clear button.
export function faultItem(fault, onClear) {
  const item = document.createElement("li");
  item.dataset.fault = String(fault.id);
  item.dataset.kind = fault.kind;
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "clear";
  button.setAttribute("aria-label", `clear fault ${fault.id} (${fault.kind})`);
  button.addEventListener("click", () => onClear(fault.id));
  item.append(`#${fault.id} `, kindBadge(fault.kind), ` ${describe(fault)} `, button);
  return item;
}

// A fault's own parameters (defaults left out) and where it stands.
export function describe(fault) {
  const skip = { kind: true, target: true, probability: 1, start_in: 0 };
  const params = Object.entries(fault.spec ?? {})
    .filter(([key, value]) => skip[key] !== true && skip[key] !== value && value !== null)
    .filter(([, value]) => !(Array.isArray(value) && !value.length))
    .map(([key, value]) => {
      const words = label(key);
      const shown = typeof value === "object" ? JSON.stringify(value) : value;
      return `${words.text} ${shown}${words.unit ? ` ${words.unit}` : ""}`;
    });
  const when =
    fault.state !== "active"
      ? fault.state
      : fault.ends_in_s == null
        ? "until cleared"
        : `ends in ${Math.ceil(fault.ends_in_s)} s`;
  return `(${[...params, when].join(", ")})`;
}
