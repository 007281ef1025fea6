// The fault controls of a server's panel. The kinds of fault and their parameters are read
// from the control API's own OpenAPI document, so the form offers exactly what the API
// accepts; applying is POST /api/v1/faults, clearing DELETE /api/v1/faults/{id}.

import { ApiError, call, get } from "./api.js";

// Fields every kind shares: the form sets the target itself and offers duration and
// probability once, beside the kind's own parameters.
const COMMON = new Set([
  "kind", "target", "function_codes", "unit", "addresses", "probability", "start_in", "duration",
]);

// The fault kinds the API documents: [{kind, params: [{name, schema, required}]}].
export function faultKinds(document) {
  const schemas = document?.components?.schemas ?? {};
  const kinds = [];
  for (const schema of Object.values(schemas)) {
    const kind = schema?.properties?.kind;
    const value = kind?.const ?? (kind?.enum?.length === 1 ? kind.enum[0] : undefined);
    if (typeof value !== "string" || !schema.properties.target) continue;
    const required = new Set(schema.required ?? []);
    const params = Object.entries(schema.properties)
      .filter(([name]) => !COMMON.has(name))
      .map(([name, property]) => ({ name, schema: property, required: required.has(name) }));
    kinds.push({ kind: value, params });
  }
  return kinds.sort((a, b) => a.kind.localeCompare(b.kind));
}

function input(param) {
  const schema = param.schema;
  const choices = schema.enum ?? schema.anyOf?.find((s) => s.enum)?.enum;
  let field;
  if (choices) {
    field = document.createElement("select");
    for (const choice of choices) field.append(new Option(choice, choice));
  } else {
    field = document.createElement("input");
    const numeric = ["number", "integer"].includes(schema.type);
    field.type = numeric ? "number" : "text";
    if (numeric) field.step = schema.type === "integer" ? "1" : "any";
    if (schema.minimum !== undefined) field.min = String(schema.minimum);
    if (schema.maximum !== undefined) field.max = String(schema.maximum);
    field.size = 6;
  }
  field.name = param.name;
  field.dataset.type = schema.type ?? "string";
  if (schema.default !== undefined && schema.default !== null) field.value = String(schema.default);
  field.required = param.required;
  const label = document.createElement("label");
  if (schema.description) label.title = schema.description; // the registry's help
  label.append(`${param.name} `, field);
  return label;
}

export class FaultForm {
  constructor(form, serverName, say, changed) {
    this.form = form;
    this.serverName = serverName;
    this.say = say;
    this.changed = changed;
    this.kinds = null;
    this.list = document.getElementById("active-faults");
    this.select = form.querySelector("select[name=kind]");
    this.select.addEventListener("change", () => this.showParams());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.apply();
    });
  }

  async reset() {
    if (this.kinds === null) {
      try {
        this.kinds = faultKinds(await get("/api/v1/openapi.json"));
      } catch {
        this.kinds = [];
      }
      this.select.replaceChildren(...this.kinds.map(({ kind }) => new Option(kind, kind)));
    }
    this.form.hidden = this.kinds.length === 0;
    this.showParams();
  }

  showParams() {
    const kind = this.kinds?.find((k) => k.kind === this.select.value);
    this.form.querySelector(".params").replaceChildren(...(kind ? kind.params.map(input) : []));
  }

  body() {
    const body = { kind: this.select.value, target: { servers: [this.serverName()] } };
    for (const field of this.form.querySelectorAll(".params [name]")) {
      if (field.value === "") continue;
      const numeric = ["number", "integer"].includes(field.dataset.type);
      body[field.name] = numeric ? Number(field.value) : field.value;
    }
    const duration = this.form.querySelector("[name=duration]").value.trim();
    if (duration) body.duration = duration;
    const probability = this.form.querySelector("[name=probability]").value.trim();
    if (probability) body.probability = Number(probability);
    return body;
  }

  async apply() {
    const body = this.body();
    try {
      const fault = await call("POST", "/api/v1/faults", body);
      this.say(`fault ${fault?.id ?? ""} applied: ${body.kind}`);
      this.changed();
    } catch (error) {
      this.say(`fault: ${error instanceof ApiError ? error.message : error}`, false);
    }
  }

  async clear(id) {
    try {
      await call("DELETE", `/api/v1/faults/${encodeURIComponent(id)}`);
      this.say(`fault ${id} cleared`);
      this.changed();
    } catch (error) {
      this.say(`fault ${id}: ${error instanceof ApiError ? error.message : error}`, false);
    }
  }

  showActive(faults) {
    const items = faults.map((fault) => {
      const item = document.createElement("li");
      item.dataset.fault = String(fault.id);
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "clear";
      button.addEventListener("click", () => this.clear(fault.id));
      item.append(`#${fault.id} ${fault.kind} ${describe(fault)} `, button);
      return item;
    });
    if (!items.length) items.push(Object.assign(document.createElement("li"), { textContent: "none", className: "muted" }));
    this.list.replaceChildren(...items);
  }
}

// A fault's own parameters (defaults left out) and where it stands.
function describe(fault) {
  const skip = { kind: true, target: true, probability: 1, start_in: 0 };
  const params = Object.entries(fault.spec ?? {})
    .filter(([key, value]) => skip[key] !== true && skip[key] !== value && value !== null)
    .filter(([, value]) => !(Array.isArray(value) && !value.length))
    .map(([key, value]) => `${key} ${typeof value === "object" ? JSON.stringify(value) : value}`);
  const when =
    fault.state !== "active"
      ? fault.state
      : fault.ends_in_s == null
        ? "until cleared"
        : `ends in ${Math.ceil(fault.ends_in_s)} s`;
  return `(${[...params, when].join(", ")})`;
}
