// Our own small SVG charts for the usage dashboard: stacked bars per day and horizontal bars.
// No library and nothing fetched: the gateway may run where the internet is not. Each chart is
// drawn at its container's width in CSS pixels (so text stays readable on a phone), is an
// <svg role="img"> with a summary for screen readers, and each bar has a <title> with its value.

const SVG = "http://www.w3.org/2000/svg";
export const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
];
export const OTHERS_COLOR = "#9a9a9a";

function el(name, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function titled(node, text) {
  node.append(el("title", {}, text));
  return node;
}

/** A round axis maximum and its ticks: 1, 2 or 5 times a power of ten per step. */
export function niceTicks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const rough = max / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  const ticks = [];
  for (let value = 0; value < max + step / 2; value += step) ticks.push(value);
  if (ticks[ticks.length - 1] < max) ticks.push(ticks[ticks.length - 1] + step);
  return ticks;
}

function svgRoot(width, height, label) {
  const svg = el("svg", {
    role: "img", "aria-label": label, width, height, viewBox: `0 0 ${width} ${height}`,
    class: "chart", "font-size": 12, fill: "currentColor",
  });
  return svg;
}

/**
 * Stacked bars, one per day.
 * days: ["2026-11-01", ...]; series: [{label, color, values: [number per day], titles?: [text
 * per day]}]; format(number) -> axis text; label: the summary read by screen readers.
 * Returns a <figure> holding the <svg> and its legend.
 */
export function stackedBars({ days, series, format, label, width, height = 260 }) {
  const margin = { top: 12, right: 8, bottom: 28, left: 60 };
  const plotWidth = Math.max(40, width - margin.left - margin.right);
  const plotHeight = height - margin.top - margin.bottom;
  const totals = days.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const ticks = niceTicks(Math.max(0, ...totals));
  const top = ticks[ticks.length - 1] || 1;
  const y = (value) => margin.top + plotHeight - (value / top) * plotHeight;
  const band = plotWidth / Math.max(1, days.length);
  const barWidth = Math.max(1, Math.min(48, band * 0.72));

  const svg = svgRoot(width, height, label);
  const axis = el("g", { class: "axis" });
  for (const tick of ticks) {
    axis.append(el("line", {
      x1: margin.left, x2: margin.left + plotWidth, y1: y(tick), y2: y(tick),
      stroke: "currentColor", "stroke-opacity": tick === 0 ? 0.5 : 0.12,
    }));
    axis.append(el("text", {
      x: margin.left - 6, y: y(tick), "text-anchor": "end", "dominant-baseline": "middle",
    }, format(tick)));
  }
  // Day labels (MM-DD): as many as fit without overlapping, about 44 px each.
  const every = Math.max(1, Math.ceil(44 / band));
  days.forEach((day, i) => {
    if (i % every !== 0) return;
    axis.append(el("text", {
      x: margin.left + band * (i + 0.5), y: height - 8, "text-anchor": "middle",
    }, day.slice(5)));
  });
  svg.append(axis);

  const bars = el("g", { class: "bars" });
  days.forEach((day, i) => {
    let base = 0;
    series.forEach((s) => {
      const value = s.values[i] || 0;
      if (value <= 0) return;
      const x = margin.left + band * i + (band - barWidth) / 2;
      const rect = el("rect", {
        x: x.toFixed(2), y: y(base + value).toFixed(2), width: barWidth.toFixed(2),
        height: Math.max(0.5, y(base) - y(base + value)).toFixed(2), fill: s.color,
        "data-day": day, "data-series": s.label,
      });
      titled(rect, s.titles?.[i] ?? `${day} · ${s.label}: ${format(value)}`);
      bars.append(rect);
      base += value;
    });
  });
  svg.append(bars);

  const figure = document.createElement("figure");
  figure.className = "chart-figure";
  figure.append(svg);
  figure.append(legend(series));
  return figure;
}

function legend(series) {
  const list = document.createElement("ul");
  list.className = "legend";
  for (const s of series) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = s.color;
    swatch.setAttribute("aria-hidden", "true");
    item.append(swatch, document.createTextNode(s.label));
    list.append(item);
  }
  return list;
}

/**
 * Horizontal bars, largest first as given: items [{label, value, text, title?}] where text is
 * written beside the bar and title (else "label: text") is the bar's <title>.
 */
export function horizontalBars({ items, label, width, color = PALETTE[0] }) {
  const row = 26;
  const labelWidth = Math.min(160, Math.round(width * 0.34));
  const textWidth = Math.min(150, Math.round(width * 0.3));
  const plotWidth = Math.max(20, width - labelWidth - textWidth - 12);
  const height = Math.max(row, items.length * row) + 4;
  const max = Math.max(0, ...items.map((item) => item.value)) || 1;
  const svg = svgRoot(width, height, label);
  items.forEach((item, i) => {
    const y = i * row + 2;
    const name = el("text", {
      x: labelWidth - 6, y: y + row / 2, "text-anchor": "end", "dominant-baseline": "middle",
    }, truncate(item.label, Math.floor(labelWidth / 7)));
    const barLength = Math.max(item.value > 0 ? 2 : 0, (item.value / max) * plotWidth);
    const rect = el("rect", {
      x: labelWidth, y: y + 4, width: barLength.toFixed(2), height: row - 8, fill: color, rx: 2,
      "data-label": item.label,
    });
    titled(rect, item.title ?? `${item.label}: ${item.text}`);
    const value = el("text", {
      x: labelWidth + barLength + 6, y: y + row / 2, "dominant-baseline": "middle",
    }, item.text);
    svg.append(titled(name, item.label), rect, value);
  });
  return svg;
}

function truncate(text, length) {
  return text.length <= length ? text : `${text.slice(0, Math.max(1, length - 1))}…`;
}
