// Words for the page: names in natural order (meter-9 before meter-10), parameter names as
// labels with their units, values as their type shows them. Nothing here knows a fault kind:
// labels come from the API's own schema and names.

const collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });

export function naturalCompare(a, b) {
  return collator.compare(a, b);
}

// Units a parameter's name ends with, as the farm's API names them (ms, s, ...).
const UNITS = { ms: "ms", s: "s", pct: "%", per_s: "/s" };

// "jitter_ms" -> {text: "jitter", unit: "ms", help}: the unit is the one the fault-kind
// registry writes at the end of the schema's description ("... (ms)"), else the one the
// name ends with.
export function label(name, schema = {}) {
  let words = name;
  let unit = "";
  for (const [suffix, shown] of Object.entries(UNITS)) {
    if (name === suffix) {
      words = suffix === "ms" ? "time" : name;
      unit = shown;
    } else if (name.endsWith(`_${suffix}`)) {
      words = name.slice(0, -suffix.length - 1);
      unit = shown;
    }
  }
  const help = schema.description ?? "";
  const stated = help.match(/\(([^()]{1,8})\)$/); // a unit is short: "ms", "per s"
  if (stated) unit = stated[1];
  return { text: words.replaceAll("_", " "), unit, help };
}

// A point's value as its type shows it: NaN and infinities as such, not "nan".
export function formatValue(value) {
  if (typeof value === "string") {
    const special = { nan: "NaN", inf: "+Inf", "-inf": "-Inf" }[value.toLowerCase()];
    return special ?? JSON.stringify(value);
  }
  if (typeof value === "number" && !Number.isInteger(value)) return String(Number(value.toPrecision(7)));
  return String(value);
}

export function seconds(value) {
  if (value == null) return "–";
  if (value < 0.001) return `${(value * 1e6).toFixed(0)} µs`;
  if (value < 1) return `${(value * 1e3).toFixed(value < 0.01 ? 2 : 1)} ms`;
  return `${value.toFixed(2)} s`;
}
