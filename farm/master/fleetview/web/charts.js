// Small charts for a server's panel: one SVG line per series, no library. A gap in the line
// is an interval without a value (no request: no latency).

const WIDTH = 220;
const HEIGHT = 40;
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

// A figure: the title with the last and the highest value, and the line of `values`
// (oldest first) over `minutes`; `format` writes a value with its unit.
export function chart(title, values, format, minutes) {
  const known = values.filter((v) => v != null);
  const top = Math.max(...known, 0) || 1;
  const step = values.length > 1 ? WIDTH / (values.length - 1) : WIDTH;
  let path = "";
  let pen = false;
  values.forEach((value, index) => {
    if (value == null) {
      pen = false;
      return;
    }
    const x = (index * step).toFixed(1);
    const y = (HEIGHT - 2 - (value / top) * (HEIGHT - 4)).toFixed(1);
    path += `${pen ? "L" : "M"}${x} ${y} `;
    pen = true;
  });
  const last = known.length ? format(known[known.length - 1]) : "–";
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.series = title;
  const caption = document.createElement("figcaption");
  caption.textContent = `${title}: now ${last}, highest ${known.length ? format(top) : "–"} (last ${minutes} min)`;
  const picture = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT, role: "img" });
  picture.setAttribute("aria-label", caption.textContent);
  picture.append(svg("rect", { x: 0, y: 0, width: WIDTH, height: HEIGHT, class: "frame" }));
  if (path) picture.append(svg("path", { d: path.trim(), class: "line" }));
  figure.append(caption, picture);
  return figure;
}
