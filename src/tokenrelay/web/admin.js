// The admin page: a client of /admin/v1 (docs/admin-page.md). The admin key lives in
// sessionStorage only (this tab; Sign out clears it) and goes out as a Bearer header, never a
// cookie, so no other site can act with it. Every value that came from a user (names, emails,
// metadata, audit entries) is put on the page with textContent, never parsed as HTML.

import { button, el, fillTable, limitsText, list, usd, when } from "/static/admin_view.js";

const $ = (id) => document.getElementById(id);
const STORAGE = "tokenrelay.admin.key";
const API = "/admin/v1";
const PAGES = 50; // at most this many pages of a list are followed
const state = { me: null, orgs: [], users: [], keys: [], budgets: [], auditNext: null };

class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message ?? `The gateway answered HTTP ${status}.`);
    this.status = status;
    this.type = error.type ?? "api_error";
    this.param = error.param ?? null;
  }
}

// --- the API ------------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(STORAGE) ?? ""}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const payload = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

/** Every item of a list endpoint, following its `next` cursor. */
async function listAll(path, query = {}) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < PAGES; page++) {
    const params = new URLSearchParams(query);
    if (cursor) params.set("cursor", cursor);
    const text = params.toString();
    const body = await api("GET", text ? `${path}?${text}` : path);
    items.push(...body.data);
    cursor = body.next;
    if (!cursor) break;
  }
  return items;
}

const nameOf = (items, id) => (id ? (items.find((item) => item.id === id)?.name ?? id) : "—");

/** A key as people know it: its name (keys may have none) and its prefix. */
const keyLabel = (key) => (key.name ? `${key.name} (${key.prefix}…)` : `${key.prefix}…`);

function subjectName(scope, id) {
  if (scope === "key") {
    const key = state.keys.find((item) => item.id === id);
    return key ? keyLabel(key) : id;
  }
  return nameOf(scope === "user" ? state.users : state.orgs, id);
}

// --- status, errors ------------------------------------------------------------------------------

function say(text) {
  $("status").textContent = text;
}

function problem(error) {
  const text = error instanceof ApiError && error.param ? `${error.message} (field: ${error.param})` : error.message;
  $("problem").textContent = text;
  $("problem").hidden = false;
  say(text);
}

function clearProblem() {
  $("problem").hidden = true;
  $("problem").textContent = "";
}

/** Run an API action: its success says `done`, a 401 signs out, any other error is shown. */
async function act(action, done) {
  clearProblem();
  try {
    const result = await action();
    if (done) say(typeof done === "function" ? done(result) : done);
    return result;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut(`Signed out: ${error.message}`);
    } else {
      problem(error instanceof ApiError ? error : new Error(`Cannot reach the gateway (${error.message}).`));
    }
    return undefined;
  }
}

// --- dialogs: focus goes in, Escape closes, focus comes back ------------------------------------

let opener = null;

function openDialog(dialog, from) {
  opener = from ?? document.activeElement;
  dialog.showModal();
  const first = dialog.querySelector("input:not([type=hidden]), select, button");
  first?.focus();
}

let redrawn = null; // the opener to find again if a redraw replaces it

function returnFocus() {
  const back = opener;
  opener = null;
  if (back?.isConnected) back.focus();
  redrawn = back?.dataset?.action ? { action: back.dataset.action, id: back.dataset.id, section: back.closest("section") } : null;
}

/** After a redraw: focus the new twin of a table button that opened a dialog, else its heading. */
function keepFocus() {
  const lost = redrawn;
  redrawn = null;
  if (!lost || (document.activeElement && document.activeElement !== document.body)) return;
  const twin = document.querySelector(`[data-action="${lost.action}"][data-id="${CSS.escape(lost.id ?? "")}"]`);
  (twin ?? lost.section?.querySelector("h2"))?.focus();
}

/** Close a dialog and give the focus back at once (the "close" event would come a task later). */
function closeDialog(dialog) {
  if (!dialog.open) return;
  dialog.close();
  if (dialog.id === "secret-dialog") $("secret").value = ""; // the secret is gone from the page
  returnFocus();
}

for (const dialog of document.querySelectorAll("dialog")) {
  // Escape is handled here rather than by the browser's cancel, which Chromium may skip for a
  // dialog opened without a fresh user activation (after a fetch), and which focuses late.
  dialog.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      closeDialog(dialog);
    }
  });
  dialog.addEventListener("cancel", (event) => {
    event.preventDefault();
    closeDialog(dialog);
  });
  for (const close of dialog.querySelectorAll("[data-close]")) {
    close.addEventListener("click", () => closeDialog(dialog));
  }
}
for (const heading of document.querySelectorAll("main h2")) heading.tabIndex = -1;

// --- signing in and out -------------------------------------------------------------------------

function signOut(reason) {
  sessionStorage.removeItem(STORAGE);
  state.me = null;
  $("console").hidden = true;
  $("whoami").hidden = true;
  $("identity").textContent = "";
  $("sign-in").hidden = false;
  $("admin-key").value = "";
  clearProblem();
  say(reason ?? "Signed out; the key is forgotten.");
  $("admin-key").focus();
}

async function signIn() {
  let me;
  try {
    me = await api("GET", "/me");
  } catch (error) {
    sessionStorage.removeItem(STORAGE);
    $("sign-in").hidden = false;
    $("console").hidden = true;
    if (error instanceof ApiError) problem(new Error(`That key cannot administer this gateway: ${error.message}`));
    else problem(new Error(`Cannot reach the gateway (${error.message}).`));
    $("admin-key").focus();
    return;
  }
  state.me = me;
  clearProblem();
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("whoami").hidden = false;
  $("identity").textContent = me.org_id ? `Signed in as ${me.role} of organization ${me.org_id}` : `Signed in as ${me.role}`;
  const manage = me.role === "admin" || me.role === "org_admin";
  for (const form of document.querySelectorAll("[data-needs]")) {
    form.hidden = form.dataset.needs === "admin" ? me.role !== "admin" : !manage;
  }
  await refresh();
  say(`Signed in as ${me.role}.`);
  $("orgs-title").focus();
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(STORAGE, $("admin-key").value.trim());
  $("admin-key").value = "";
  say("Signing in…");
  await signIn();
});

$("sign-out").addEventListener("click", () => signOut());
$("refresh").addEventListener("click", async () => {
  say("Refreshing…");
  await refresh();
  if ($("problem").hidden) say("Refreshed: spend and lists are as of now.");
});

// --- loading and drawing ------------------------------------------------------------------------

const canManage = () => state.me && (state.me.role === "admin" || state.me.role === "org_admin");

async function refresh() {
  await act(async () => {
    const revoked = $("show-revoked").checked ? { include_revoked: "true" } : {};
    const [orgs, users, keys, budgets] = await Promise.all([
      listAll("/orgs"),
      listAll("/users"),
      listAll("/keys", revoked),
      listAll("/budgets"),
    ]);
    Object.assign(state, { orgs, users, keys, budgets });
    drawOrgs();
    drawUsers();
    drawKeys();
    drawBudgets();
    fillOptions();
    keepFocus();
    await loadAudit(false);
  });
}

function statusText(item) {
  return item.disabled ? "disabled" : "active";
}

function drawOrgs() {
  fillTable(
    "orgs",
    state.orgs.map((org) => [org.name, org.id, statusText(org), limitsText(org.limits), when(org.created_at)]),
    "No organizations yet.",
  );
}

function drawUsers() {
  fillTable(
    "users",
    state.users.map((user) => [
      user.name, nameOf(state.orgs, user.org_id), user.email || "—", user.id, statusText(user), when(user.created_at),
    ]),
    "No users yet.",
  );
}

function keyStatus(key) {
  if (key.revoked_at) return `revoked ${when(key.revoked_at)}`;
  if (key.expires_at && Date.parse(key.expires_at) <= Date.now()) return "expired";
  return "active";
}

function drawKeys() {
  fillTable(
    "keys",
    state.keys.map((key) => {
      const actions = el("td", null, { class: "actions-cell" });
      const data = { "data-id": key.id };
      const label = keyLabel(key);
      actions.append(button("Activity", `Recent requests and rate limits of key ${label}`, (from) => showRequests(key, from),
        { ...data, "data-action": "requests" }));
      if (canManage() && !key.revoked_at) {
        actions.append(
          button("Limits", `Edit limits of key ${label}`, (from) => editLimits(key, from), { ...data, "data-action": "limits" }),
          button("Rotate", `Rotate key ${label}`, (from) => confirmRotate(key, from), { ...data, "data-action": "rotate" }),
          button("Revoke", `Revoke key ${label}`, (from) => confirmRevoke(key, from), { ...data, "data-action": "revoke" }),
        );
      }
      return [
        key.name ?? "—", `${key.prefix}…`, nameOf(state.orgs, key.org_id), nameOf(state.users, key.user_id), key.role ?? "API key",
        limitsText(key.limits), when(key.expires_at), keyStatus(key), actions,
      ];
    }),
    "No keys yet.",
  );
}

function drawBudgets() {
  fillTable(
    "budgets",
    state.budgets.map((budget) => {
      const used = el("td");
      const amount = Number(budget.amount_usd);
      const spent = Number(budget.spent_usd);
      const share = amount > 0 ? Math.min(spent / amount, 1) : 1;
      const meter = el("meter", null, { min: "0", max: "1", value: String(share), high: "0.8", optimum: "0" });
      meter.setAttribute("aria-label", `${Math.round(share * 100)} % of the budget used`);
      used.append(meter, el("span", ` ${Math.round((spent / (amount || 1)) * 100)} %`));
      const actions = el("td", null, { class: "actions-cell" });
      if (canManage()) {
        const label = subjectName(budget.scope, budget.subject_id);
        const data = { "data-id": budget.id };
        actions.append(
          button("Edit", `Edit the budget of ${label}`, (from) => editBudget(budget, from), { ...data, "data-action": "edit-budget" }),
          button("Delete", `Delete the budget of ${label}`, (from) => confirmDeleteBudget(budget, from), { ...data, "data-action": "delete-budget" }),
        );
      }
      return [
        subjectName(budget.scope, budget.subject_id), budget.scope, usd(budget.amount_usd), budget.period,
        budget.hard ? "hard" : "soft", usd(budget.spent_usd), usd(budget.remaining_usd), used, when(budget.resets_at), actions,
      ];
    }),
    "No budgets yet.",
  );
}

function options(select, items, label, blank) {
  const kept = select.value;
  select.replaceChildren();
  if (blank !== undefined) select.append(el("option", blank, { value: "" }));
  for (const item of items) select.append(el("option", label(item), { value: item.id }));
  if ([...select.options].some((option) => option.value === kept)) select.value = kept;
}

function fillOptions() {
  for (const select of document.querySelectorAll("select[data-options]")) {
    const items = select.dataset.options === "orgs" ? state.orgs : state.users;
    const label = select.dataset.options === "orgs" ? (org) => org.name : (user) => `${user.name} (${nameOf(state.orgs, user.org_id)})`;
    options(select, items, label, select.dataset.blank);
  }
  fillSubjects();
}

function fillSubjects() {
  const scope = $("budget-scope").value;
  const items = scope === "key" ? state.keys.filter((key) => !key.revoked_at) : scope === "user" ? state.users : state.orgs;
  options($("budget-subject"), items, (item) => subjectName(scope, item.id));
}

$("budget-scope").addEventListener("change", fillSubjects);
$("show-revoked").addEventListener("change", () => refresh());

async function loadAudit(more) {
  const query = new URLSearchParams({ limit: "50" });
  if (more && state.auditNext) query.set("before", state.auditNext);
  const page = await api("GET", `/audit?${query}`);
  state.auditNext = page.next;
  const rows = page.data.map((entry) => [
    when(entry.at), entry.actor ? `${entry.actor.role ?? "?"} ${entry.actor.key_id ?? ""}`.trim() : "—", entry.action,
    `${entry.target_type} ${entry.target_id ?? ""}`.trim(), entry.org_id ? nameOf(state.orgs, entry.org_id) : "—", change(entry),
  ]);
  if (more) {
    const body = $("audit").tBodies[0];
    for (const cells of rows) {
      const row = body.insertRow();
      for (const cell of cells) row.append(el("td", cell));
    }
  } else {
    fillTable("audit", rows, "Nothing changed yet.");
  }
  $("audit-more").hidden = !state.auditNext;
}

/** What an audit entry changed, field by field, as plain text. */
function change(entry) {
  const before = entry.before ?? {};
  const after = entry.after ?? {};
  const fields = new Set([...Object.keys(before), ...Object.keys(after)]);
  const parts = [];
  for (const field of fields) {
    if (["updated_at", "created_at", "id"].includes(field)) continue;
    const old = JSON.stringify(before[field] ?? null);
    const now = JSON.stringify(after[field] ?? null);
    if (old !== now) parts.push(entry.before ? `${field}: ${old} → ${now}` : `${field}: ${now}`);
  }
  const text = parts.join("; ");
  return text.length > 300 ? `${text.slice(0, 299)}…` : text || "—";
}

$("audit-more").addEventListener("click", () => act(() => loadAudit(true), "Older audit entries loaded."));

// --- creating -----------------------------------------------------------------------------------

function onSubmit(id, handler) {
  $(id).addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      await handler(form);
    } finally {
      submit.disabled = false;
    }
  });
}

onSubmit("org-form", async (form) => {
  const org = await act(() => api("POST", "/orgs", { name: $("org-name").value }));
  if (!org) return;
  form.reset();
  await refresh();
  say(`Organization ${org.name} created.`); // once the table shows it
  $("org-name").focus();
});

onSubmit("user-form", async (form) => {
  const body = { org_id: $("user-org").value, name: $("user-name").value };
  if ($("user-email").value) body.email = $("user-email").value;
  const user = await act(() => api("POST", "/users", body));
  if (!user) return;
  form.reset();
  await refresh();
  say(`User ${user.name} created.`);
  $("user-name").focus();
});

onSubmit("key-form", async (form) => {
  const body = { name: $("key-name").value };
  for (const field of ["org_id", "user_id", "role"]) {
    const value = form.elements[field].value;
    if (value) body[field] = value;
  }
  const routes = list($("key-routes").value);
  const models = list($("key-models").value);
  if (routes.length) body.routes = routes;
  if (models.length) body.models = models;
  if ($("key-expires").value) body.expires_at = new Date(`${$("key-expires").value}Z`).toISOString();
  const created = await act(() => api("POST", "/keys", body));
  if (!created) return;
  form.reset();
  await refresh();
  showSecret(created.key, created.secret, null, $("key-name"));
  say(`Key ${keyLabel(created.key)} created; copy its secret now, it is shown only once.`);
});

function showSecret(key, secret, note, from) {
  $("secret-name").textContent = keyLabel(key);
  $("secret").value = secret;
  $("secret-note").textContent = note ?? "";
  openDialog($("secret-dialog"), from);
  $("secret").select();
}

$("copy-secret").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("secret").value);
    say("Secret copied to the clipboard.");
  } catch {
    $("secret").select();
    say("The clipboard is not available here: the secret is selected, copy it with Ctrl+C.");
  }
});

onSubmit("budget-form", async (form) => {
  const body = {
    scope: $("budget-scope").value,
    subject_id: $("budget-subject").value,
    amount_usd: $("budget-amount").value.trim(),
    period: $("budget-period").value,
    hard: $("budget-hard").checked,
    alert_at: list($("budget-alerts").value).map(Number),
  };
  const budget = await act(() => api("POST", "/budgets", body));
  if (!budget) return;
  form.reset();
  await refresh();
  say(`Budget of ${usd(budget.amount_usd)} per ${budget.period} set for ${subjectName(budget.scope, budget.subject_id)}.`);
  $("budget-amount").focus();
});

// --- editing, revoking --------------------------------------------------------------------------

let editing = null; // the key or budget an open dialog edits

function editLimits(key, from) {
  editing = key;
  const limits = key.limits ?? {};
  $("limits-name").textContent = keyLabel(key);
  $("limit-requests").value = limits.requests ?? "";
  $("limit-tokens").value = limits.tokens ?? "";
  $("limit-streams").value = limits.concurrent_streams ?? "";
  openDialog($("limits-dialog"), from);
}

onSubmit("limits-form", async () => {
  const streams = $("limit-streams").value;
  const limits = {
    requests: $("limit-requests").value.trim() || null,
    tokens: $("limit-tokens").value.trim() || null,
    concurrent_streams: streams === "" ? null : Number(streams),
  };
  const key = await act(() => api("PATCH", `/keys/${encodeURIComponent(editing.id)}`, { limits }));
  if (!key) return;
  closeDialog($("limits-dialog"));
  await refresh();
  say(`Limits of key ${keyLabel(key)} saved: ${limitsText(key.limits)}.`);
});

function editBudget(budget, from) {
  editing = budget;
  $("budget-edit-name").textContent = subjectName(budget.scope, budget.subject_id);
  $("edit-amount").value = budget.amount_usd;
  $("edit-period").value = budget.period;
  $("edit-alerts").value = (budget.alert_at ?? []).join(", ");
  $("edit-hard").checked = budget.hard;
  openDialog($("budget-dialog"), from);
}

onSubmit("budget-edit-form", async () => {
  const body = {
    amount_usd: $("edit-amount").value.trim(),
    period: $("edit-period").value,
    hard: $("edit-hard").checked,
    alert_at: list($("edit-alerts").value).map(Number),
  };
  const budget = await act(() => api("PATCH", `/budgets/${encodeURIComponent(editing.id)}`, body));
  if (!budget) return;
  closeDialog($("budget-dialog"));
  await refresh();
  say(`Budget of ${subjectName(budget.scope, budget.subject_id)} is now ${usd(budget.amount_usd)} per ${budget.period}.`);
});

let confirmed = null; // what the confirm dialog's button does

function confirmAction(title, text, verb, action, from) {
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = verb;
  confirmed = action;
  openDialog($("confirm-dialog"), from);
  $("confirm-yes").focus();
}

onSubmit("confirm-form", async () => {
  const action = confirmed;
  confirmed = null;
  closeDialog($("confirm-dialog"));
  if (action) await action();
});

function confirmRotate(key, from) {
  confirmAction(`Rotate key ${keyLabel(key)}?`, "A new secret replaces it; the old one keeps working for an hour, then stops.",
    "Rotate", async () => {
      const rotated = await act(() => api("POST", `/keys/${encodeURIComponent(key.id)}/rotate`, { overlap_seconds: 3600 }));
      if (!rotated) return;
      await refresh();
      showSecret(rotated.key, rotated.secret, `The old key works until ${when(rotated.old_key_expires_at)}.`, $("keys-title"));
      say(`Key ${keyLabel(key)} rotated; copy the new secret now, it is shown only once.`);
    }, from);
}

function confirmRevoke(key, from) {
  confirmAction(`Revoke key ${keyLabel(key)}?`, "Requests with it are refused on every instance within the key cache TTL. This cannot be undone.",
    "Revoke", async () => {
      const revoked = await act(() => api("POST", `/keys/${encodeURIComponent(key.id)}/revoke`));
      if (!revoked) return;
      await refresh();
      $("keys-title").focus(); // its row's buttons are gone
      say(`Key ${keyLabel(revoked)} revoked.`);
    }, from);
}

function confirmDeleteBudget(budget, from) {
  const label = subjectName(budget.scope, budget.subject_id);
  confirmAction(`Delete the budget of ${label}?`, `Its ${usd(budget.amount_usd)} per ${budget.period} limit stops applying.`,
    "Delete", async () => {
      const done = await act(() => api("DELETE", `/budgets/${encodeURIComponent(budget.id)}`));
      if (done === undefined) return;
      await refresh();
      $("budgets-title").focus();
      say(`Budget of ${label} deleted.`);
    }, from);
}

function tokensText(row) {
  if (row.tokens !== undefined) return row.tokens;
  return `${row.input_tokens} in · ${row.output_tokens} out`;
}

/** A key's recent ledger rows and its rate-limit state, side by side in one dialog. */
async function showRequests(key, from) {
  const id = encodeURIComponent(key.id);
  const pages = await act(() => Promise.all([api("GET", `/keys/${id}/requests?limit=50`), api("GET", `/keys/${id}/limits`)]));
  if (!pages) return;
  const [requests, limits] = pages;
  $("requests-name").textContent = keyLabel(key);
  fillTable(
    "requests",
    requests.data.map((row) => [
      when(row.created_at), row.route, row.model, row.outcome, row.status, tokensText(row), usd(row.cost_usd),
      row.ttft_ms === null || row.ttft_ms === undefined ? "—" : Math.round(row.ttft_ms),
    ]),
    "No requests with this key yet.",
  );
  fillTable(
    "limit-state",
    (limits.limits ?? []).map((limit) => [
      limit.subject, limit.kind, limit.limit, limit.remaining ?? "—",
      limit.reset_seconds === null || limit.reset_seconds === undefined ? "—" : `${Math.ceil(limit.reset_seconds)} s`,
    ]),
    "No rate limit applies to this key.",
  );
  openDialog($("requests-dialog"), from);
  say(`${requests.data.length} recent requests of key ${keyLabel(key)}.`);
}

// --- start --------------------------------------------------------------------------------------

if (sessionStorage.getItem(STORAGE)) {
  signIn();
} else {
  $("admin-key").focus();
}
