// The admin page's text-only DOM helpers and formats (admin.js): every value is set with
// textContent or setAttribute, never parsed as HTML.
export function el(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

export function button(text, label, onClick, attributes = {}) {
  const node = el("button", text, { type: "button", class: "small", "aria-label": label, ...attributes });
  node.addEventListener("click", () => onClick(node));
  return node;
}

export function fillTable(id, rows, emptyText) {
  const table = document.getElementById(id);
  const body = table.tBodies[0];
  const columns = table.tHead.rows[0].cells.length;
  body.replaceChildren();
  if (!rows.length) {
    const row = body.insertRow();
    row.append(el("td", emptyText, { colspan: String(columns), class: "empty" }));
    return;
  }
  for (const cells of rows) {
    const row = body.insertRow();
    for (const cell of cells) row.append(cell instanceof Node ? cell : el("td", cell ?? "—"));
  }
}

export const when = (iso) => (iso ? `${iso.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "")} UTC` : "—");
/** An exact decimal string as dollars, trailing zeros trimmed down to cents: "0.004000" -> "$0.004". */
export function usd(text) {
  if (text === null || text === undefined) return "—";
  const [whole, fraction = ""] = String(text).split(".");
  return `$${whole}.${fraction.replace(/0+$/, "").padEnd(2, "0")}`;
}
export const list = (text) => text.split(",").map((part) => part.trim()).filter(Boolean);

export function limitsText(limits) {
  if (!limits) return "—";
  const parts = [];
  if (limits.requests) parts.push(`${limits.requests} requests`);
  if (limits.tokens) parts.push(`${limits.tokens} tokens`);
  if (limits.concurrent_streams !== null && limits.concurrent_streams !== undefined) {
    parts.push(`${limits.concurrent_streams} concurrent streams`);
  }
  return parts.length ? parts.join(" · ") : "—";
}
