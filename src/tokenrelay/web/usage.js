// The usage dashboard: reads GET /v1/usage/dashboard for the chosen range and grouping and draws
// it with chart.js. Once the gateway has API keys the data needs an admin key: the page asks for
// it on a 401/403, keeps it in sessionStorage (this tab only) and sends it as a Bearer token.
// Everything shown is built with DOM calls and textContent, never from HTML strings, since
// group names (users, orgs) come from callers.

import { OTHERS_COLOR, PALETTE, horizontalBars, stackedBars } from "/static/chart.js";

const $ = (id) => document.getElementById(id);
const KEY = "tokenrelay.usage.key";
const NONE = { org: "(no org)", user: "(anonymous)", model: "(no model)", route: "(no route)" };
const GROUPING = { model: "Model", org: "Org", user: "User", route: "Route", requested_model: "Requested model" };
const DAY_MS = 86400000;
let shown = null; // the data on screen, redrawn when the width changes
let latest = 0; // the newest request: answers to older ones are dropped

const storedKey = () => sessionStorage.getItem(KEY);

// --- formatting ---------------------------------------------------------------------------------

/** An exact decimal string as dollars, trailing zeros trimmed to cents: "0.003000000" -> "$0.003". */
function exactUSD(text) {
  const [whole, fraction = ""] = text.split(".");
  const kept = fraction.replace(/0+$/, "").padEnd(2, "0");
  return `$${Number(whole).toLocaleString("en-US")}.${kept}`;
}

/** Dollars short enough for an axis or beside a bar. */
function shortUSD(value) {
  if (value === 0) return "$0";
  if (value >= 100) return `$${Math.round(value).toLocaleString("en-US")}`;
  if (value >= 1) return `$${value.toFixed(2)}`;
  return `$${Number(value.toPrecision(2)).toLocaleString("en-US", { maximumFractionDigits: 9 })}`;
}

const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const whole = (value) => Number(value).toLocaleString("en-US");
const requests = (n) => `${whole(n)} ${n === 1 ? "request" : "requests"}`;
const share = (part, all) => all ? `${(100 * part / all).toLocaleString("en-US", { maximumFractionDigits: 1 })}%` : "-";
const tokensOf = (sums) => sums.input_tokens + sums.output_tokens;
const dollarsOf = (sums) => sums.cost_nanousd / 1e9; // for drawing only; text uses cost_usd

function groupLabel(group, by) {
  if (group.others) return `${group.others} others`;
  return group.name ?? NONE[by];
}

// --- the request --------------------------------------------------------------------------------

/** The range as the API's words: whole UTC days for day ranges, so "7 days" is 7 bars. */
function since(range) {
  const days = /^(\d+)d$/.exec(range);
  if (!days) return range;
  const now = new Date();
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return new Date(today - (Number(days[1]) - 1) * DAY_MS).toISOString().slice(0, 10);
}

function dataURL(format) {
  const query = new URLSearchParams({ since: since($("range").value), by: $("by").value });
  if (format) query.set("format", format);
  return `/v1/usage/dashboard?${query}`;
}

function headers() {
  const key = storedKey();
  return key ? { authorization: `Bearer ${key}` } : {};
}

async function load() {
  const mine = ++latest;
  const state = new URLSearchParams({ range: $("range").value, by: $("by").value, metric: $("metric").value });
  history.replaceState(null, "", `?${state}`);
  $("csv").href = dataURL("csv");
  $("forget").hidden = !storedKey();
  say("Loading usage…");
  let response, body;
  try {
    response = await fetch(dataURL(), { headers: headers(), cache: "no-store" });
    body = await response.json().catch(() => ({}));
  } catch (error) {
    if (mine === latest) problem(`Cannot reach the gateway (${error.message}). Is it running?`);
    return;
  }
  if (mine !== latest) return;
  const message = body.error?.message ?? `The gateway answered HTTP ${response.status}.`;
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY);
    $("forget").hidden = true;
    askForKey(response.status === 403 ? `${message}. Enter an admin key instead.` : message);
    return;
  }
  if (!response.ok) {
    problem(response.status === 503 ? `The usage data is not available right now: ${message}` : message);
    return;
  }
  $("problem").hidden = true;
  $("key-section").hidden = true;
  $("report").hidden = false;
  shown = body;
  render(body);
  const total = body.total;
  say(`Showing ${requests(total.requests)} from ${body.days[0]} to ${body.days.at(-1)}.`);
}

function say(text) {
  $("status").textContent = text;
}

function problem(text) {
  $("problem").textContent = text;
  $("problem").hidden = false;
  say(text);
}

function askForKey(reason) {
  $("report").hidden = true;
  $("problem").hidden = true;
  $("key-reason").textContent = reason;
  $("key-section").hidden = false;
  $("key").value = "";
  $("key").focus();
  say("An admin API key is needed to show usage.");
}

// --- drawing ------------------------------------------------------------------------------------

function render(data) {
  const by = data.by;
  const metric = $("metric").value;
  $("open-note").hidden = data.access !== "open";
  renderTotals(data.total);

  const width = $("chart").clientWidth || 600;
  const value = metric === "cost" ? dollarsOf : tokensOf;
  const text = (sums) => metric === "cost" ? exactUSD(sums.cost_usd) : `${whole(tokensOf(sums))} tokens`;
  const series = data.groups.map((group, i) => ({
    label: groupLabel(group, by),
    color: group.others ? OTHERS_COLOR : PALETTE[i % PALETTE.length],
    values: group.daily.map(value),
    titles: group.daily.map((sums, day) =>
      `${data.days[day]} · ${groupLabel(group, by)}: ${text(sums)} · ${requests(sums.requests)}`),
  }));
  const what = metric === "cost" ? "Cost" : "Tokens";
  $("chart-title").textContent = `${what} per day by ${by}`;
  const summary = `${what} per day by ${by}, ${data.days[0]} to ${data.days.at(-1)}: ` +
    `${text(data.total)} in all, ${series.length} ${series.length === 1 ? "group" : "groups"}`;
  if (data.total.requests === 0) {
    $("chart").replaceChildren(paragraph("No requests in this range.", "empty"));
  } else {
    $("chart").replaceChildren(stackedBars({
      days: data.days, series, label: summary, width,
      format: metric === "cost" ? shortUSD : (n) => compact.format(n),
    }));
  }
  $("chart-table").replaceChildren(dayTable(data, series, metric));

  $("top-title").textContent = `Top spenders by ${by}`;
  $("top").replaceChildren(spenders(data.top.group, by, `Top spenders by ${by}`));
  $("top-users-card").hidden = by === "user";
  $("top-users").replaceChildren(spenders(data.top.user, "user", "Top users by cost", PALETTE[1]));
  $("top-orgs-card").hidden = by === "org";
  $("top-orgs").replaceChildren(spenders(data.top.org, "org", "Top orgs by cost", PALETTE[4]));

  // Only a range the response cache answered in shows it (a gateway without one looks the same).
  const cached = data.total.cache_hits > 0;
  $("cache-card").hidden = !cached;
  $("cache").replaceChildren(...(cached ? [cacheTable(data)] : []));

  $("ttft").replaceChildren(table(
    "Time to first token per provider, in milliseconds",
    ["Provider", "Requests", "p50 ms", "p90 ms", "p99 ms"],
    data.ttft.map((t) => [t.provider ?? "(none)", whole(t.requests), ms(t.p50_ms), ms(t.p90_ms), ms(t.p99_ms)]),
    "No request reached a first token in this range.",
  ));
  $("failovers").replaceChildren(table(
    "Failovers per route",
    ["Route", "Requests", "Failovers", "Recovered", "Hedged"],
    data.failovers.map((f) => [f.route, whole(f.requests), whole(f.failovers), whole(f.recovered), whole(f.hedged)]),
    "No requests in this range.",
  ));
  $("errors").replaceChildren(table(
    "Requests that did not complete",
    ["Outcome", "Type", "Provider", "Requests"],
    data.errors.map((e) => [
      e.error ? e.outcome : `${e.outcome} (not an error)`, e.error_type ?? "-", e.provider ?? "-", whole(e.requests),
    ]),
    "Every request completed.",
  ));
}

const ms = (value) => value === undefined ? "-" : value.toLocaleString("en-US", { maximumFractionDigits: 1 });

function renderTotals(total) {
  const items = [
    ["Cost", exactUSD(total.cost_usd)],
    ["Requests", whole(total.requests)],
    ["Errors", whole(total.errors)],
    ["Input tokens", whole(total.input_tokens)],
    ["Output tokens", whole(total.output_tokens)],
  ];
  if (total.cache_hits > 0) {
    items.push(["Cache hits", whole(total.cache_hits)], ["Cache savings", exactUSD(total.saved_usd)]);
  }
  $("totals").replaceChildren(...items.map(([name, value]) => {
    const box = document.createElement("div");
    const term = document.createElement("dt");
    const detail = document.createElement("dd");
    term.textContent = name;
    detail.textContent = value;
    box.append(term, detail);
    return box;
  }));
}

/** Per group (as in the chart): requests, those the response cache answered, and what it saved. */
function cacheTable(data) {
  const line = (label, sums) => [
    label, whole(sums.requests), whole(sums.cache_hits), share(sums.cache_hits, sums.requests), exactUSD(sums.saved_usd),
  ];
  const rows = data.groups.map((group) => line(groupLabel(group, data.by), group.total));
  return table(
    `Response cache hits and savings by ${data.by}`,
    [GROUPING[data.by] ?? data.by, "Requests", "Cache hits", "Hit rate", "Saved"],
    [...rows, line("Total", data.total)],
    "No requests in this range.",
  );
}

function spenders(rows, by, label, color) {
  if (!rows.length) return paragraph("No requests in this range.", "empty");
  const items = rows.map((row) => ({
    label: row.name ?? NONE[by],
    value: row.cost_nanousd,
    text: `${shortUSD(dollarsOf(row))} · ${whole(row.requests)} req`,
    title: `${row.name ?? NONE[by]}: ${exactUSD(row.cost_usd)} · ${requests(row.requests)}`,
  }));
  const width = $("top").clientWidth || 320;
  const summary = items.map((item) => item.title).join("; ");
  return horizontalBars({ items, label: `${label}: ${summary}`, width, color });
}

function dayTable(data, series, metric) {
  const rows = data.days.map((day, i) => {
    const cells = data.groups.map((group) => metric === "cost" ? exactUSD(group.daily[i].cost_usd) : whole(tokensOf(group.daily[i])));
    return [day, ...cells];
  });
  const caption = `${metric === "cost" ? "Cost" : "Tokens"} per day by ${data.by}`;
  return table(caption, ["Day", ...series.map((s) => s.label)], rows, "No days in this range.");
}

function table(caption, head, rows, empty) {
  if (!rows.length) return paragraph(empty, "empty");
  const node = document.createElement("table");
  const title = document.createElement("caption");
  title.textContent = caption;
  title.className = "visually-hidden";
  const thead = node.createTHead().insertRow();
  for (const name of head) {
    const cell = document.createElement("th");
    cell.scope = "col";
    cell.textContent = name;
    thead.append(cell);
  }
  const tbody = node.createTBody();
  for (const row of rows) {
    const line = tbody.insertRow();
    row.forEach((value, i) => {
      const cell = i === 0 ? document.createElement("th") : document.createElement("td");
      if (i === 0) cell.scope = "row";
      cell.textContent = value;
      line.append(cell);
    });
  }
  node.prepend(title);
  return node;
}

function paragraph(text, className) {
  const node = document.createElement("p");
  node.className = className;
  node.textContent = text;
  return node;
}

// --- the CSV ------------------------------------------------------------------------------------

/** A plain link downloads when no key is needed; with a key the file comes by fetch, as a Blob. */
async function downloadCSV(event) {
  if (!storedKey()) return;
  event.preventDefault();
  const response = await fetch(dataURL("csv"), { headers: headers(), cache: "no-store" });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    problem(body.error?.message ?? `The CSV download failed (HTTP ${response.status}).`);
    return;
  }
  const disposition = response.headers.get("content-disposition") ?? "";
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? "tokenrelay-usage.csv";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// --- wiring -------------------------------------------------------------------------------------

function start() {
  const given = new URLSearchParams(location.search);
  for (const name of ["range", "by", "metric"]) {
    const select = $(name);
    if ([...select.options].some((option) => option.value === given.get(name))) select.value = given.get(name);
  }
  $("range").addEventListener("change", load);
  $("by").addEventListener("change", load);
  $("metric").addEventListener("change", () => {
    history.replaceState(null, "", `?${new URLSearchParams({ range: $("range").value, by: $("by").value, metric: $("metric").value })}`);
    if (shown) render(shown);
  });
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("csv").addEventListener("click", downloadCSV);
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    load();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    load();
  });
  let width = window.innerWidth;
  let timer = null;
  window.addEventListener("resize", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (shown && window.innerWidth !== width) render(shown);
      width = window.innerWidth;
    }, 150);
  });
  load();
}

start();
