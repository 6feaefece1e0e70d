// The debugger page. Plain DOM, no framework, no build step.
// Everything the API returns is masked on the server; this page still renders
// every value as text (textContent), never as HTML: an event name is data from
// the internet.
"use strict";

const POLL_MS = 1500;
const EXAMPLE = {
  method: "GET",
  path: "/g/collect",
  query: "v=2&tid=G-TEST&cid=555.1732360000&gcs=G111&gcd=13r3r3r2r5l1&en=purchase&cu=EUR&ep.transaction_id=ORD-1&epn.value=49.9&dl=https%3A%2F%2Fshop.example%2Fthanks%3Fgclid%3DCj0-test",
  headers: { "User-Agent": "Mozilla/5.0" },
  body: null,
};

const state = { seq: null, selected: null, selectedSeq: null, filters: "", timer: null };

// -- helpers ----------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text}`, text });
}

function pretty(value) {
  return el("pre", { text: typeof value === "string" ? value : JSON.stringify(value, null, 2) });
}

function kvTable(rows, headings) {
  const table = el("table", { class: "kv" });
  if (headings) table.append(el("tr", {}, headings.map((h) => el("th", { text: h }))));
  for (const row of rows) {
    table.append(el("tr", {}, row.map((cell) => (cell instanceof Node ? el("td", {}, cell) : el("td", { class: "mono", text: cell ?? "" })))));
  }
  return table;
}

function time(iso) {
  return iso ? iso.slice(11, 19) : "";
}

async function api(path, options) {
  const response = await fetch(path, { credentials: "same-origin", ...(options || {}) });
  if (response.status === 401) {
    window.location.reload(); // the login form
    throw new Error("unauthorized");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? `${body.error}${body.detail && body.detail.problem ? ": " + body.detail.problem : ""}` : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function post(path, payload) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload || {}) });
}

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

// -- tabs -------------------------------------------------------------------------------------------

function showTab(name) {
  for (const button of document.querySelectorAll(".tab-button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== `tab-${name}`;
  if (name === "dead-letters") loadDeadLetters();
  if (name === "dry-runs") loadDryRuns();
}

// -- the list ---------------------------------------------------------------------------------------

function filterQuery() {
  const params = new URLSearchParams();
  const pairs = { client: "f-client", event: "f-event", tag: "f-tag", outcome: "f-outcome", q: "f-q" };
  for (const [name, id] of Object.entries(pairs)) {
    const value = document.getElementById(id).value.trim();
    if (value) params.set(name, value);
  }
  return params.toString();
}

async function refreshList(force) {
  const filters = filterQuery();
  if (filters !== state.filters) {
    state.filters = filters;
    state.seq = null;
  }
  const known = force || state.seq === null ? "" : `&known=${state.seq}`;
  let data;
  try {
    data = await api(`/debug/api/traces?${filters}${known}`);
  } catch (error) {
    setStatus(`not updated: ${error.message}`);
    return;
  }
  state.seq = data.seq;
  if (data.unchanged) return;
  setStatus(`${data.kept} of the last ${data.keep_last} requests kept in memory`);
  renderList(data.traces, data.kept);
  const current = data.traces.find((t) => t.id === state.selected);
  if (current && current.seq !== state.selectedSeq) openTrace(current.id, true);
  const q = document.getElementById("f-q").value.trim();
  const lookup = document.getElementById("order-lookup");
  lookup.hidden = !(q && data.traces.length === 0);
  if (!lookup.hidden) {
    lookup.replaceChildren("Not among the requests in memory. ", el("button", { type: "button", text: `Look up order ${q} in the ledger`, onclick: () => lookupOrder(q) }));
  }
}

function renderList(traces, kept) {
  const body = document.querySelector("#list tbody");
  body.replaceChildren(
    ...traces.map((t) =>
      el(
        "tr",
        { "data-trace": t.id, class: t.id === state.selected ? "selected" : "", onclick: () => openTrace(t.id) },
        el("td", { class: "mono nowrap", title: t.id }, time(t.started_at), el("span", { class: "sub", text: t.id.slice(0, 8) })),
        el("td", { text: t.client || "" }),
        el("td", { class: "mono" }, el("span", { class: "method", text: t.method }), t.path),
        el("td", {}, t.events.map((name) => el("span", { class: "item", text: name }))),
        el("td", {}, t.tags.map((name) => el("span", { class: "item", text: name }))),
        el("td", { class: "nowrap" }, `${t.status ?? ""} `, badge(t.outcome)),
      ),
    ),
  );
  renderEmpty(traces.length, kept);
}

// What an empty list means: nothing arrived yet, or nothing kept matches the filters.
function renderEmpty(shown, kept) {
  const empty = document.getElementById("list-empty");
  empty.hidden = shown > 0;
  if (!empty.hidden && state.filters) {
    empty.replaceChildren(
      `No request kept in memory matches these filters (${kept ?? 0} kept). `,
      el("button", { type: "button", text: "Clear filters", onclick: clearFilters }));
  } else if (!empty.hidden) {
    empty.textContent = "No requests yet. Requests to the collection routes appear here as they arrive.";
  }
}

function clearFilters() {
  for (const id of ["f-client", "f-event", "f-tag", "f-outcome", "f-q"]) document.getElementById(id).value = "";
  refreshList(true);
}

async function openTrace(id, quiet) {
  state.selected = id;
  for (const row of document.querySelectorAll("#list tbody tr")) row.classList.toggle("selected", row.dataset.trace === id);
  try {
    const trace = await api(`/debug/api/traces/${encodeURIComponent(id)}`);
    state.selectedSeq = trace.seq;
    renderTrace(document.getElementById("detail"), trace, true);
  } catch (error) {
    if (!quiet) document.getElementById("detail").replaceChildren(el("p", { class: "error", text: error.message }));
  }
}

async function lookupOrder(orderId) {
  const detail = document.getElementById("detail");
  try {
    const report = await api(`/debug/api/orders/${encodeURIComponent(orderId)}`);
    detail.replaceChildren(el("h2", { text: `Order ${orderId} in the ledger` }), pretty(report));
  } catch (error) {
    detail.replaceChildren(el("p", { class: "error", text: error.message }));
  }
}

// -- one trace --------------------------------------------------------------------------------------

function renderTrace(container, t, recorded) {
  const parts = [];
  parts.push(el("h2", {}, `${t.method} ${t.path} `, badge(t.outcome)));
  parts.push(
    el("div", { class: "meta" },
      el("span", { class: "mono", text: `trace ${t.id}` }),
      el("span", { text: t.started_at }),
      t.client ? el("span", { text: `client ${t.client}` }) : null,
      el("span", { text: `status ${t.status ?? "–"}` }),
      t.duration_ms != null ? el("span", { text: `answered in ${t.duration_ms} ms` }) : null),
  );
  if (t.note) parts.push(el("div", { class: "note", text: t.note }));
  if (recorded) {
    parts.push(
      el("div", { class: "actions" },
        el("button", { type: "button", id: "btn-explain-trace", text: "Explain with the current container", onclick: () => explainTrace(t) }),
        t.client_events && t.client_events.length
          ? el("button", { type: "button", id: "btn-resend", text: "Resend to dry-run destinations", onclick: () => resendTrace(t.id) })
          : null,
        t.explain_request ? el("button", { type: "button", text: "Edit in Explain", onclick: () => editInExplain(t.explain_request) }) : null),
    );
  }
  if (t.error) parts.push(el("h3", { text: "Answer" }), pretty(t.error));

  const request = t.request;
  if (request) {
    parts.push(el("h3", { text: "Request as received" }));
    if (request.client_ip) parts.push(el("div", { class: "meta", text: `client address ${request.client_ip}` }));
    if (request.query && request.query.length) parts.push(el("h4", { text: "Query" }), kvTable(request.query));
    const headers = Object.entries(request.headers || {});
    parts.push(el("details", {}, el("summary", { text: `Headers (${headers.length})` }), kvTable(headers)));
    if (request.body !== null && request.body !== undefined) parts.push(el("h4", { text: `Body (${request.body_bytes} bytes)` }), pretty(request.body));
  }

  if (t.client_events && t.client_events.length) {
    parts.push(el("h3", { text: "Events built by the client" }));
    for (const e of t.client_events) {
      parts.push(el("details", {}, el("summary", { text: `#${e.index} ${e.event_name}${e.transaction_id ? " · transaction " + e.transaction_id : ""}` }), pretty(e.event)));
    }
  }

  if (t.ledger && t.ledger.length) {
    const used = (n) => (n.value_used ? Object.entries(n.value_used).map(([k, v]) => `${k} ${v}`).join(", ") : "");
    parts.push(el("h3", { text: "Order ledger" }), kvTable(t.ledger.map((n) => [n.order_id, n.decision, n.change_id || "", used(n)]), ["order", "decision", "change", "value used"]));
  }

  for (const [i, run] of (t.runs || []).entries()) {
    const box = el("div", { class: "box run" });
    box.append(el("h4", { text: `Pipeline: ${run.event_name}${run.client_event !== null ? " (event #" + run.client_event + ")" : ""}` }));
    box.append(
      el("div", { class: "consent" },
        kvTable(run.consent.map((c) => [c.signal, badge(c.state || "unset"), badge(c.source, "source")]), ["consent signal", "state", "source"])),
    );
    box.append(el("div", { class: "meta", text: run.removed.length ? `consent removed: ${run.removed.join(", ")}` : "consent removed nothing" }));
    box.append(
      kvTable(run.triggers.map((tr) => [tr.trigger, tr.tags.join(", "), badge(tr.result ? "true" : "false"), tr.failed || ""]), ["trigger", "tags", "result", "first failing condition"]),
    );
    const fired = run.fired.length ? run.fired.join(", ") : "none";
    box.append(el("div", { class: "meta" }, el("span", { text: `tags fired: ${fired}` }),
      run.skipped.length ? el("span", { text: `skipped: ${run.skipped.map((s) => `${s.tag} (${s.reason})`).join(", ")}` }) : null));
    box.append(el("details", {}, el("summary", { text: "event after consent" }), pretty(run.event)));
    parts.push(i === 0 ? el("h3", { text: "Consent, triggers, tags" }) : null, box);
  }

  const deliveries = t.delivery_items || [];
  if (deliveries.length) {
    parts.push(el("h3", { text: "Deliveries" }));
    for (const d of deliveries) {
      const box = el("div", { class: "box delivery" });
      box.append(el("h4", {}, `${d.destination} · ${d.tag} `, badge(d.status)));
      box.append(el("div", { class: "meta" }, el("span", { class: "mono", text: d.idempotency_key }), d.not_before ? el("span", { text: `not before ${d.not_before}` }) : null));
      box.append(el("details", {}, el("summary", { text: "item built by the tag" }), pretty(d.item)));
      if (d.attempts.length) {
        box.append(kvTable(d.attempts.map((a) => [String(a.attempt), time(a.at), badge(a.outcome), a.code || "", a.message || "", `${a.send_ms} ms`, `${a.waited_ms} ms`, a.next]),
          ["#", "at", "outcome", "vendor code", "vendor message", "send", "after commit", "next"]));
        const last = d.attempts[d.attempts.length - 1];
        for (const request of last.requests || []) {
          box.append(el("div", { class: "meta", text: `outgoing ${request.method} ${request.url}${last.batch_size > 1 ? ` (batch of ${last.batch_size})` : ""}` }), pretty(request.body));
        }
      } else {
        box.append(el("div", { class: "meta", text: "waiting in the outbox" }));
      }
      parts.push(box);
    }
  }
  if (t.timings && Object.keys(t.timings).length) {
    parts.push(el("h3", { text: "Timings (ms from arrival)" }), kvTable(Object.entries(t.timings).map(([k, v]) => [k, String(v)])));
  }
  container.replaceChildren(...parts.filter(Boolean));
}

async function explainTrace(t) {
  const detail = document.getElementById("detail");
  try {
    const result = await post("/debug/api/explain", { trace_id: t.id });
    showTab("explain");
    document.getElementById("explain-input").value = JSON.stringify(t.explain_request || {}, null, 2);
    renderTrace(document.getElementById("explain-result"), result, false);
  } catch (error) {
    detail.prepend(el("p", { class: "error", text: error.message }));
  }
}

async function resendTrace(id) {
  try {
    const result = await post(`/debug/api/traces/${encodeURIComponent(id)}/resend`);
    await refreshList(true);
    state.selected = result.id;
    renderTrace(document.getElementById("detail"), result, false);
  } catch (error) {
    document.getElementById("detail").prepend(el("p", { class: "error", text: error.message }));
  }
}

function editInExplain(spec) {
  document.getElementById("explain-input").value = JSON.stringify(spec, null, 2);
  showTab("explain");
}

// -- explain ----------------------------------------------------------------------------------------

async function runExplain() {
  const error = document.getElementById("explain-error");
  error.textContent = "";
  let spec;
  try {
    spec = JSON.parse(document.getElementById("explain-input").value);
  } catch (e) {
    error.textContent = `not valid JSON: ${e.message}`;
    return;
  }
  try {
    const result = await post("/debug/api/explain", { request: spec });
    renderTrace(document.getElementById("explain-result"), result, false);
  } catch (e) {
    error.textContent = e.message;
  }
}

// -- storage: dead letters and dry runs -------------------------------------------------------------

async function loadDeadLetters() {
  const body = document.querySelector("#dl-table tbody");
  try {
    const letters = await api("/debug/api/dead-letters?limit=200");
    body.replaceChildren(
      ...letters.map((d) =>
        el("tr", {},
          el("td", {}, el("input", { type: "checkbox", value: d.id, "aria-label": `select ${d.id}` })),
          el("td", { text: d.id }), el("td", { text: d.destination }), el("td", { text: d.tag }),
          el("td", {}, badge(d.code || "", "permanent")), el("td", { text: d.message || "" }),
          el("td", { text: d.attempts }), el("td", { text: d.failed_at }),
          el("td", {}, d.trace_id ? el("button", { type: "button", class: "quiet", text: d.trace_id.slice(0, 8), onclick: () => { showTab("requests"); openTrace(d.trace_id); } }) : ""))),
    );
    document.getElementById("dl-status").textContent = `${letters.length} dead letter(s)`;
  } catch (error) {
    document.getElementById("dl-status").textContent = error.message;
  }
}

async function replaySelected() {
  const ids = [...document.querySelectorAll("#dl-table tbody input:checked")].map((box) => Number(box.value));
  if (!ids.length) {
    document.getElementById("dl-status").textContent = "select dead letters to replay";
    return;
  }
  try {
    const result = await post("/debug/api/dead-letters/replay", { ids });
    document.getElementById("dl-status").textContent = `replayed ${result.replayed}`;
    await loadDeadLetters();
  } catch (error) {
    document.getElementById("dl-status").textContent = error.message;
  }
}

async function loadDryRuns() {
  const list = document.getElementById("dr-list");
  try {
    const records = await api("/debug/api/dry-runs?last=20");
    list.replaceChildren(
      ...records.map((r) => el("div", { class: "detail box" },
        el("h4", { text: `${r.destination} · ${r.batch_key} · ${r.items} item(s) · ${r.recorded_at}` }),
        el("div", { class: "meta mono", text: `${r.request.method} ${r.request.url}` }),
        pretty(r.request.body))),
    );
    if (!records.length) list.replaceChildren(el("p", { class: "hint", text: "No dry-run requests recorded." }));
  } catch (error) {
    list.replaceChildren(el("p", { class: "error", text: error.message }));
  }
}

// -- start ------------------------------------------------------------------------------------------

async function start() {
  for (const button of document.querySelectorAll(".tab-button")) button.addEventListener("click", () => showTab(button.dataset.tab));
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/debug/logout", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: "{}" });
    window.location.reload();
  });
  document.getElementById("explain-run").addEventListener("click", runExplain);
  document.getElementById("dl-refresh").addEventListener("click", loadDeadLetters);
  document.getElementById("dl-replay").addEventListener("click", replaySelected);
  document.getElementById("dr-refresh").addEventListener("click", loadDryRuns);
  document.getElementById("filters").addEventListener("submit", (event) => { event.preventDefault(); refreshList(true); });
  for (const id of ["f-client", "f-tag", "f-outcome"]) document.getElementById(id).addEventListener("change", () => refreshList(true));
  for (const id of ["f-event", "f-q"]) document.getElementById(id).addEventListener("input", () => refreshList(true));
  document.getElementById("explain-input").value = JSON.stringify(EXAMPLE, null, 2);

  const meta = await api("/debug/api/meta");
  const fill = (id, values) => document.getElementById(id).append(...values.map((v) => el("option", { value: v, text: v })));
  fill("f-client", meta.clients);
  fill("f-tag", meta.tags);
  fill("f-outcome", meta.outcomes);

  await refreshList(true);
  state.timer = setInterval(() => { if (document.getElementById("live").checked) refreshList(false); }, POLL_MS);
}

start();
