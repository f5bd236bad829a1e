// Cairn dev dashboard: a small hash-routed page over /api, re-rendered on every `change` from
// /api/live. No framework, no CDN: the dev server embeds this file.
"use strict";

const view = document.getElementById("view");
// signalDrafts: what the user typed for a signal's data, kept across live re-renders.
const state = { functions: [], filter: { function: "", status: "" }, rendering: false, again: false, console: false, signalDrafts: {} };

const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const json = (value) => esc(JSON.stringify(value, null, 2));
const pill = (status) => `<span class="pill s-${esc(status)}" data-status="${esc(status)}">${esc(status)}</span>`;

function ms(n) {
  if (n == null || isNaN(n)) return "";
  if (n < 1000) return `${n} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(1)} s`;
  if (n < 3600000) return `${Math.floor(n / 60000)}m ${String(Math.floor((n % 60000) / 1000)).padStart(2, "0")}s`;
  return `${Math.floor(n / 3600000)}h ${String(Math.floor((n % 3600000) / 60000)).padStart(2, "0")}m`;
}

function ago(at) {
  if (!at) return "";
  const d = Date.now() - at;
  if (d < 5000) return "just now";
  if (d < 60000) return `${Math.floor(d / 1000)}s ago`;
  if (d < 3600000) return `${Math.floor(d / 60000)}m ago`;
  if (d < 86400000) return `${Math.floor(d / 3600000)}h ago`;
  return new Date(at).toLocaleString();
}

const clock = (at) => (at ? new Date(at).toLocaleTimeString([], { hour12: false }) + "." + String(at % 1000).padStart(3, "0") : "");

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || body.message || `${response.status} ${response.statusText}`);
  return body;
}

// Every write is JSON: the dev server refuses other writes, so a web page cannot forge them.
const post = (path, body) => api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

function toast(text) {
  const el = document.createElement("div");
  el.className = "toast";
  el.textContent = text;
  document.body.appendChild(el);
  setTimeout(() => el.remove(), 2600);
}

function route() {
  const [path, query] = (location.hash.slice(1) || "/runs").split("?");
  const parts = path.split("/").filter(Boolean);
  return { page: parts[0] || "runs", id: parts[1] ? decodeURIComponent(parts[1]) : null, query: new URLSearchParams(query || "") };
}

async function render() {
  if (state.rendering) { state.again = true; return; }
  state.rendering = true;
  try {
    const { page, id } = route();
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === page));
    if (page === "events") await renderEvents(id);
    else if (page === "functions") await renderFunctions();
    else if (page === "schedules") await renderSchedules();
    else await renderRuns(id);
  } catch (err) {
    view.innerHTML = `<div class="card"><div class="errbox">${esc(err.message)}</div></div>`;
  } finally {
    state.rendering = false;
    if (state.again) { state.again = false; render(); }
  }
}

// Keeps open <details> open across re-renders.
function keepOpen(render) {
  const open = new Set([...view.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key));
  const scroll = window.scrollY;
  render();
  view.querySelectorAll("details[data-key]").forEach((d) => { if (open.has(d.dataset.key)) d.open = true; });
  window.scrollTo(0, scroll);
}

async function loadFunctions() {
  if (!state.functions.length) state.functions = (await api("/api/functions")).functions;
  return state.functions;
}

async function renderRuns(selected) {
  const functions = await loadFunctions();
  const q = new URLSearchParams({ limit: "200" });
  if (state.filter.function) q.set("function", state.filter.function);
  if (state.filter.status) q.set("status", state.filter.status);
  const [{ runs }, detail] = await Promise.all([api(`/api/runs?${q}`), selected ? api(`/api/runs/${encodeURIComponent(selected)}`).catch((e) => ({ error: e.message })) : null]);
  const options = (values, current, all) => values.map((v) => `<option value="${esc(v)}" ${v === current ? "selected" : ""}>${esc(v || all)}</option>`).join("");
  const duration = (r) => ms(["completed", "failed", "cancelled", "skipped"].includes(r.status) ? r.duration_ms : Date.now() - r.created_at);
  const rows = runs.map((r) => `
    <tr data-run="${esc(r.run_id)}" data-testid="run-row" class="${r.run_id === selected ? "selected" : ""}">
      <td>${pill(r.status)}</td>
      <td>${esc(r.function_id)}</td>
      <td class="mono muted clip" title="${esc(r.event_name)}">${esc(r.event_name)}</td>
      <td class="muted" title="${esc(new Date(r.created_at).toISOString())}">${ago(r.created_at)}</td>
      <td class="dur">${duration(r)}</td>
    </tr>`).join("");
  const list = `
    <div class="card">
      <div class="head">Runs <span class="muted">${runs.length}</span></div>
      <div class="toolbar">
        <select id="filter-function" data-testid="filter-function">${options(["", ...functions.map((f) => f.id)], state.filter.function, "all functions")}</select>
        <select id="filter-status" data-testid="filter-status">${options(["", "queued", "running", "sleeping", "waiting", "completed", "failed", "cancelled", "skipped"], state.filter.status, "any status")}</select>
        <span class="spacer"></span>
        <button data-bulk="cancel" data-testid="bulk-cancel" class="danger" title="Cancel every unfinished run this filter shows">Cancel matching</button>
        <button data-bulk="replay" data-testid="bulk-replay" title="Rerun every run this filter shows, from the start">Replay matching</button>
      </div>
      ${runs.length ? `<table><thead><tr><th>Status</th><th>Function</th><th>Event</th><th>Started</th><th style="text-align:right">Duration</th></tr></thead><tbody>${rows}</tbody></table>`
        : `<div class="empty">No runs yet. Send an event:<code>aws events put-events --endpoint-url ${esc(location.origin)} --entries '[{"EventBusName":"cairn","Source":"app","DetailType":"app/my.event","Detail":"{}"}]'</code></div>`}
    </div>`;
  keepOpen(() => {
    view.innerHTML = `<div class="split">${list}<div id="detail">${detail ? runDetail(detail) : `<div class="card"><div class="empty">Select a run to see its timeline.</div></div>`}</div></div>`;
  });
  view.querySelectorAll("tr[data-run]").forEach((tr) => tr.addEventListener("click", () => { location.hash = `#/runs/${encodeURIComponent(tr.dataset.run)}`; }));
  document.getElementById("filter-function").onchange = (e) => { state.filter.function = e.target.value; render(); };
  document.getElementById("filter-status").onchange = (e) => { state.filter.status = e.target.value; render(); };
  view.querySelectorAll("[data-action]").forEach((b) => b.addEventListener("click", () => runAction(b.dataset.action, b.dataset.run)));
  view.querySelectorAll("[data-draft]").forEach((t) => t.addEventListener("input", () => { state.signalDrafts[t.dataset.draft] = t.value; }));
  view.querySelectorAll("[data-signal]").forEach((b) => b.addEventListener("click", () => sendSignal(b.dataset.signal, view.querySelector("[data-testid=signal-data]").value)));
  view.querySelectorAll("[data-bulk]").forEach((b) => b.addEventListener("click", () => bulkAction(b.dataset.bulk)));
}

// Bulk cancel or replay of what the filter shows, through the same core operations as one run.
async function bulkAction(action) {
  const filter = { function: state.filter.function, status: state.filter.status };
  const what = `${filter.status || "all"} runs of ${filter.function || "every function"}`;
  if (!window.confirm(`${action === "cancel" ? "Cancel" : "Replay"} ${what}?`)) return;
  try {
    const report = await post(`/api/runs/${action}`, filter);
    toast(`${action === "cancel" ? "Cancelled" : "Replayed"} ${report.done.length} of ${report.matched}${report.skipped.length ? ` (${report.skipped.length} skipped)` : ""}`);
    render();
  } catch (err) {
    toast(err.message);
  }
}

function runDetail(detail) {
  if (detail.error && detail.error.startsWith("no run")) {
    // Just invoked: the run exists once the function takes the event (a first call compiles it).
    return `<div class="card" data-testid="run-pending"><div class="empty">Waiting for the run to start…</div></div>`;
  }
  if (detail.error) return `<div class="card"><div class="errbox">${esc(detail.error)}</div></div>`;
  const { run, steps } = detail;
  const finished = ["completed", "failed", "cancelled", "skipped"].includes(run.status);
  const hasFailedStep = steps.some((s) => s.status === "failed");
  const start = run.created_at;
  // A finished run spans to its end; a live one to now (a pending sleep's bar grows with it).
  const end = finished ? run.ended_at || run.updated_at : Date.now();
  const span = Math.max(end - start, 1);
  // A step waiting for a signal (`step.wait_for_signal`): the page can send it.
  const signalWait = steps.find((s) => s.status === "scheduled" && s.detail && s.detail.event === "cairn/signal" && s.detail.signal);
  const timeline = steps.map((step) => {
    // A step still pending when the run ended was cut short by the cancel or the failure.
    const s = finished && (step.status === "scheduled" || step.status === "retrying") ? { ...step, status: run.status === "cancelled" ? "cancelled" : step.status } : step;
    const from = (s.started_at || start) - start;
    const to = Math.min(s.ended_at || end, end) - start;
    const left = Math.min(100, (from / span) * 100);
    const width = Math.max(0.6, Math.min(100 - left, ((to - from) / span) * 100));
    const icon = { completed: "✓", failed: "✗", retrying: "↻", scheduled: "…", cancelled: "⊘" }[s.status] || "•";
    const body = s.status === "completed" ? json(s.output) : s.error ? json(s.error) : s.wake_at ? `until ${esc(new Date(s.wake_at).toLocaleString())}${s.detail ? "\n" + json(s.detail) : ""}` : json(s.detail);
    return `
      <details class="step" data-key="${esc(s.id)}" data-testid="step" data-step="${esc(s.name)}" data-step-status="${esc(s.status)}">
        <summary>
          <span class="icon s-${esc(s.status)}">${icon}</span>
          <span>${esc(s.name)}</span>
          <span class="kind">${esc(s.kind)}</span>
          <span class="track" title="${esc(clock(s.started_at))} → ${esc(clock(s.ended_at))}"><span class="bar s-${esc(s.status)}" style="left:${left}%;width:${width}%"></span></span>
          <span class="dur">${s.ended_at ? ms(s.ended_at - s.started_at) : esc(s.status)}</span>
          <span class="att" title="attempts">×${esc(s.attempts)}</span>
        </summary>
        <pre class="json" data-testid="step-output">${body}</pre>
      </details>`;
  }).join("");
  return `
    <div class="card" data-testid="run-detail" data-run-id="${esc(run.run_id)}">
      <div class="head">
        ${pill(run.status)} <strong>${esc(run.function_id)}</strong>
        <div class="actions">
          <button data-action="rerun-start" data-run="${esc(run.run_id)}" data-testid="rerun-start">Rerun</button>
          <button data-action="rerun-failed" data-run="${esc(run.run_id)}" data-testid="rerun-failed" ${hasFailedStep ? "" : "disabled"} title="Keep the steps before the failed one">Rerun from failed step</button>
          <button data-action="cancel" class="danger" data-run="${esc(run.run_id)}" data-testid="cancel" ${finished ? "disabled" : ""}>Cancel</button>
        </div>
      </div>
      <dl class="meta">
        <dt>Run</dt><dd class="mono">${esc(run.run_id)}</dd>
        <dt>Event</dt><dd>${state.console ? `<span class="mono">${esc(run.event_name)}</span>` : `<a href="#/events/${encodeURIComponent(run.event_id)}" class="mono">${esc(run.event_name)}</a>`} <span class="muted mono">${esc(run.event_id)}</span></dd>
        <dt>Started</dt><dd>${esc(new Date(run.created_at).toLocaleString())}</dd>
        <dt>Duration</dt><dd>${finished ? ms(run.duration_ms) : ms(Date.now() - run.created_at) + " so far"}</dd>
        ${run.attempt ? `<dt>Attempt</dt><dd>${run.attempt + 1}</dd>` : ""}
        ${run.started_by ? `<dt>Started by</dt><dd data-testid="run-started-by">${esc(run.started_by)}</dd>` : ""}
        ${run.reason ? `<dt>Why</dt><dd data-testid="run-reason">${esc(run.reason)}</dd>` : ""}
      </dl>
      <div class="section">Timeline</div>
      <div class="timeline" data-testid="timeline">${timeline || `<div class="empty">No steps yet.</div>`}</div>
      ${signalWait && !finished ? `<div class="section">Signal</div>
      <div class="signal" data-testid="signal-form">
        <p>Waiting for the signal <code data-testid="signal-name">${esc(signalWait.detail.signal)}</code>: send it with this data (JSON).</p>
        <textarea data-testid="signal-data" data-draft="${esc(signalWait.detail.signal)}" rows="3" spellcheck="false">${esc(state.signalDrafts[signalWait.detail.signal] ?? "{}")}</textarea>
        <button data-signal="${esc(signalWait.detail.signal)}" data-testid="send-signal">Send signal</button>
      </div>` : ""}
      ${run.status === "failed" && run.error ? `<div class="section">Error</div><div class="errbox" data-testid="run-error">${esc(run.error.message || JSON.stringify(run.error))}</div>` : ""}
      ${run.status === "completed" ? `<div class="section">Output</div><pre class="json" data-testid="run-output">${json(run.output)}</pre>` : ""}
      <div class="section">Event</div>
      <pre class="json">${json(run.event)}</pre>
    </div>`;
}

async function sendSignal(signal, text) {
  let data;
  try {
    data = JSON.parse(text || "null");
  } catch (err) {
    toast(`The signal's data is not JSON: ${err.message}`);
    return;
  }
  try {
    const { data: sent } = await post("/api/signals", { signal, data });
    delete state.signalDrafts[signal];
    toast(`Signal sent to ${sent.run_id}`);
    render();
  } catch (err) {
    toast(err.message);
  }
}

async function runAction(action, runId) {
  try {
    if (action === "cancel") {
      await post(`/api/runs/${encodeURIComponent(runId)}/cancel`, {});
      toast("Run cancelled");
      render();
    } else {
      const from = action === "rerun-failed" ? "failed" : "start";
      const { run_id } = await post(`/api/runs/${encodeURIComponent(runId)}/rerun`, { from });
      toast(from === "failed" ? "Rerunning from the failed step" : "Rerunning");
      location.hash = `#/runs/${encodeURIComponent(run_id)}`;
    }
  } catch (err) {
    toast(err.message);
  }
}

async function renderEvents(selected) {
  const [{ events, total }, detail] = await Promise.all([api("/api/events?limit=200"), selected ? api(`/api/events/${encodeURIComponent(selected)}`).catch((e) => ({ error: e.message })) : null]);
  const rows = events.map((e) => `
    <tr data-event="${esc(e.id)}" data-testid="event-row" class="${selected && (e.id === selected || e.event_id === selected) ? "selected" : ""}">
      <td class="mono clip" title="${esc(e.name)}">${esc(e.name)}</td>
      <td class="muted">${esc(e.source)}</td>
      <td>${e.targets.length ? e.targets.map((t) => `<span class="chip">${esc(t)}</span>`).join(" ") : `<span class="muted">no rule</span>`}</td>
      <td class="muted">${ago(e.received_at)}</td>
    </tr>`).join("");
  const list = `
    <div class="card">
      <div class="head">Events <span class="muted">${total}</span></div>
      ${events.length ? `<table><thead><tr><th>Name</th><th>Source</th><th>Routed to</th><th>Received</th></tr></thead><tbody>${rows}</tbody></table>` : `<div class="empty">No events yet.</div>`}
    </div>`;
  let side = `<div class="card"><div class="empty">Select an event to see its payload and the runs it started.</div></div>`;
  if (detail && detail.error) side = `<div class="card"><div class="errbox">${esc(detail.error)}</div></div>`;
  else if (detail) {
    const runs = detail.runs.map((r) => `<tr data-run="${esc(r.run_id)}"><td>${pill(r.status)}</td><td>${esc(r.function_id)}</td><td class="mono muted">${esc(r.run_id)}</td><td class="dur">${ms(r.duration_ms)}</td></tr>`).join("");
    const invocations = detail.invocations.map((i) => `<tr><td>${pill(i.status)}</td><td>${esc(i.function)}</td><td class="muted">${esc(i.cause)}</td><td class="att">×${esc(i.attempts)}</td></tr>${i.error ? `<tr><td colspan="4"><div class="errbox">${esc(i.error)}</div></td></tr>` : ""}`).join("");
    side = `
      <div class="card" data-testid="event-detail">
        <div class="head"><strong class="mono">${esc(detail.event.name)}</strong><span class="muted mono">${esc(detail.event.id)}</span></div>
        <div class="section">Runs started</div>
        ${runs ? `<table data-testid="event-runs"><tbody>${runs}</tbody></table>` : `<div class="empty">None${detail.event.targets.length ? " (yet, or it resumed a waiting run)" : ": no rule in template.yaml matches it"}.</div>`}
        <div class="section">Deliveries</div>
        ${invocations ? `<table><tbody>${invocations}</tbody></table>` : `<div class="empty">None.</div>`}
        <div class="section">Envelope</div>
        <pre class="json" data-testid="event-payload">${json(detail.event.envelope)}</pre>
      </div>`;
  }
  view.innerHTML = `<div class="split">${list}<div>${side}</div></div>`;
  view.querySelectorAll("tr[data-event]").forEach((tr) => tr.addEventListener("click", () => { location.hash = `#/events/${encodeURIComponent(tr.dataset.event)}`; }));
  view.querySelectorAll("tr[data-run]").forEach((tr) => tr.addEventListener("click", () => { location.hash = `#/runs/${encodeURIComponent(tr.dataset.run)}`; }));
}

async function renderFunctions() {
  state.functions = (await api("/api/functions")).functions;
  const cards = state.functions.map((f) => `
    <div class="card fn" data-testid="function" data-function="${esc(f.id)}">
      <h3><span>${esc(f.id)}</span><button class="primary" data-invoke="${esc(f.id)}" data-testid="invoke">Invoke</button></h3>
      <div class="muted">${esc(f.description || "")}</div>
      <div class="chips">${f.triggers.map((t) => t.event ? `<span class="chip">${esc(t.event)}</span>` : t.queue ? `<span class="chip cron" title="SQS queue ${esc(t.resource)}, batch size ${esc(t.batch_size)}">sqs ${esc(t.queue)}</span>` : `<span class="chip cron" title="next ${esc(t.next_at ? new Date(t.next_at).toLocaleString() : "")}">${esc(t.schedule)} ${esc(t.time_zone || "")}</span>`).join("")}</div>
      <div class="muted mono">${f.runtime === "inngest" ? `Inngest app ${esc(f.app_url)}` : `${esc(f.binary)} · ${esc(f.function_name)}`}</div>
      <div><a href="#/runs" data-runs-of="${esc(f.id)}">Runs →</a></div>
    </div>`).join("");
  view.innerHTML = `<div class="grid">${cards || `<div class="empty">No functions in template.yaml.</div>`}</div>`;
  view.querySelectorAll("[data-invoke]").forEach((b) => b.addEventListener("click", () => openInvoke(b.dataset.invoke)));
  view.querySelectorAll("[data-runs-of]").forEach((a) => a.addEventListener("click", () => { state.filter.function = a.dataset.runsOf; }));
}

function openInvoke(id) {
  const fn = state.functions.find((f) => f.id === id);
  const dialog = document.getElementById("invoke-dialog");
  dialog.dataset.function = id;
  document.getElementById("invoke-function").textContent = id;
  const first = fn && fn.triggers.find((t) => t.event);
  document.getElementById("invoke-name").value = first ? first.event : "inngest/scheduled.timer";
  document.getElementById("invoke-error").textContent = "";
  dialog.showModal();
}

document.getElementById("invoke-submit").addEventListener("click", async (e) => {
  e.preventDefault();
  const dialog = document.getElementById("invoke-dialog");
  const error = document.getElementById("invoke-error");
  let data;
  try {
    data = JSON.parse(document.getElementById("invoke-data").value || "{}");
    if (typeof data !== "object" || Array.isArray(data) || data === null) throw new Error("data must be a JSON object");
  } catch (err) {
    error.textContent = `Invalid JSON: ${err.message}`;
    return;
  }
  try {
    const name = document.getElementById("invoke-name").value.trim();
    const { run_id } = await post(`/api/functions/${encodeURIComponent(dialog.dataset.function)}/invoke`, { name, data });
    dialog.close();
    state.filter = { function: "", status: "" };
    location.hash = `#/runs/${encodeURIComponent(run_id)}`;
  } catch (err) {
    error.textContent = err.message;
  }
});

async function renderSchedules() {
  const { schedules } = await api("/api/schedules");
  const rows = schedules.map((s) => `
    <tr data-testid="schedule-row"><td class="mono">${esc(s.group_name)}/${esc(s.name)}</td><td class="mono">${esc(s.expression)} <span class="muted">${esc(s.time_zone)}</span></td>
    <td class="mono muted">${esc(s.target_arn.split(":").pop())}</td><td>${s.next_at ? `${esc(new Date(s.next_at).toLocaleString())} <span class="muted">(${ms(Math.max(0, s.next_at - Date.now()))})</span>` : `<span class="muted">done</span>`}</td></tr>`).join("");
  view.innerHTML = `<div class="card"><div class="head">Schedules <span class="muted">${schedules.length}</span></div>
    ${schedules.length ? `<table><thead><tr><th>Name</th><th>Expression</th><th>Target</th><th>Next</th></tr></thead><tbody>${rows}</tbody></table>` : `<div class="empty">No schedules.</div>`}</div>`;
}

function connectLive() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/live");
  let timer = null;
  source.addEventListener("open", () => { live.classList.add("on"); live.textContent = "live"; });
  source.addEventListener("change", () => { clearTimeout(timer); timer = setTimeout(render, 120); });
  source.addEventListener("error", () => { live.classList.remove("on"); live.textContent = "reconnecting"; });
}

// `cairn console` serves this page over a deployed stack: no event log, no schedules, and no
// live stream (it polls instead).
async function start() {
  const health = await api("/api/health").catch(() => ({}));
  state.console = health.server === "cairn-console";
  document.body.dataset.mode = state.console ? "console" : "dev";
  if (state.console) {
    document.querySelectorAll("nav a[data-nav=events], nav a[data-nav=schedules]").forEach((a) => a.remove());
    document.querySelector(".brand .muted").textContent = `console · ${health.table}`;
    document.title = `Cairn console: ${health.table}`;
    const live = document.getElementById("live");
    live.classList.add("on");
    live.textContent = "polling";
    setInterval(() => { if (!document.querySelector("dialog[open]")) render(); }, 3000);
  } else {
    connectLive();
  }
  window.addEventListener("hashchange", render);
  render();
}

start();
