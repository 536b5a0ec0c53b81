// The Omni-LLM console: one page, no build step. All data comes from the gateway's JSON APIs with the
// master key kept in sessionStorage and sent as a Bearer header (no cookies: nothing to forge cross-site).
const KEY = "omni-master-key";
const $ = (sel) => document.querySelector(sel);
const COLORS = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

// h("tag", {attr: value, onclick: fn}, child...): elements built without innerHTML, so data is never markup.
function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "rect", "line", "text", "g", "title", "polyline"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
  return el;
}

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(KEY), ...(options.headers || {}) };
  if (options.json !== undefined) { headers["Content-Type"] = "application/json"; options.body = JSON.stringify(options.json); }
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) { logout(); throw new Error("signed out: the key was rejected"); }
  const body = (response.headers.get("content-type") || "").includes("json") ? await response.json() : await response.text();
  if (!response.ok) { const e = new Error(body?.error?.message || String(body)); e.status = response.status; throw e; }
  return body;
}

const money = (v) => "$" + (v || 0).toFixed(v && v < 0.01 ? 6 : 4);
const ms = (v) => (v === null || v === undefined ? "–" : v + " ms");

// ---- login ------------------------------------------------------------------------------------------
function logout() { sessionStorage.removeItem(KEY); show(); }

async function login(event) {
  event.preventDefault();
  const key = $("#login-key").value.trim();
  sessionStorage.setItem(KEY, key);
  try { await api("/admin/health"); $("#login-error").textContent = ""; $("#login-key").value = ""; location.hash ||= "#models"; show(); }
  catch (e) { sessionStorage.removeItem(KEY); $("#login-error").textContent = e.status === 403 ? "That is not a master key." : e.message; show(); }
}

function show() {
  const signedIn = !!sessionStorage.getItem(KEY);
  $("#login").hidden = signedIn; $("#shell").hidden = !signedIn;
  if (signedIn) route();
}

// ---- pages ------------------------------------------------------------------------------------------
const PAGES = { models, playground, keys, usage, collections, tools };

let shown = 0; // the latest navigation: a slower, older page load must not replace a newer one

async function route() {
  const seq = ++shown;
  const name = (location.hash || "#models").slice(1);
  const page = PAGES[name] || models;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === name));
  const main = $("#page"); main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try { const content = await page(); if (seq === shown) main.replaceChildren(...[content].flat(Infinity)); }
  catch (e) { if (seq === shown) main.replaceChildren(h("p", { class: "error" }, e.message)); }
  if (seq === shown) main.dataset.page = name;
}

async function models() {
  const { data } = await api("/admin/health");
  const rows = data.map((m) => h("tr", { "data-model": m.id },
    h("td", {}, h("strong", {}, m.id), h("div", { class: "muted" }, m.kind === "strategy" ? "strategy: " + m.members.join(" → ") : m.kind)),
    h("td", { class: m.ready ? "ok status" : "bad status" }, m.ready ? "ready" : "not ready"),
    h("td", {}, m.deployments.map((d) => h("div", {},
      `${d.provider}/${d.model} `,
      d.ready ? (d.cooling_down ? h("span", { class: "warn" }, "cooling down") : h("span", { class: "ok" }, "healthy"))
              : h("span", { class: "bad" }, "not ready: " + d.not_ready),
      d.upstream_errors ? h("span", { class: "muted" }, ` · ${d.upstream_errors} upstream errors`) : null))),
    h("td", {}, String(m.requests)),
    h("td", {}, m.error_rate === null ? "–" : (100 * m.error_rate).toFixed(1) + "%"),
    h("td", {}, ms(m.p50_ms)), h("td", {}, ms(m.p99_ms))));
  return [h("h1", {}, "Models"),
    h("table", { id: "models-table" }, h("tr", {}, ["Model", "Status", "Deployments", "Requests", "Error rate", "p50", "p99"].map((t) => h("th", {}, t))), rows),
    h("p", { class: "muted" }, "Live figures of this process (its own metrics since start).")];
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

async function playground() {
  const { data } = await api("/v1/models");
  const model = h("select", { id: "pg-model" }, data.map((m) => h("option", { value: m.id }, m.id)));
  const system = h("textarea", { id: "pg-system", placeholder: "System prompt (optional)" });
  const prompt = h("textarea", { id: "pg-prompt", placeholder: "Your message" }, "Hello! Tell me about Omni-LLM.");
  const so = h("input", { type: "checkbox", id: "pg-so" });
  const soFormat = h("input", { id: "pg-so-format", size: 40, value: '{"answer": "string"}' });
  const rag = h("input", { id: "pg-rag", placeholder: "collection", size: 14 });
  const mcp = h("input", { id: "pg-mcp", placeholder: "servers, comma-separated", size: 22 });
  const answer = h("div", { id: "pg-answer", class: "card answer" });
  const headers = h("dl", { id: "pg-headers", class: "headers" });
  const sources = h("ol", { id: "pg-sources" });
  const trace = h("ul", { id: "pg-trace" });
  const error = h("p", { class: "error", id: "pg-error" });
  const send = h("button", { id: "pg-send", onclick: async () => {
    answer.textContent = ""; headers.replaceChildren(); sources.replaceChildren(); trace.replaceChildren();
    error.textContent = ""; send.disabled = true;
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value });
    messages.push({ role: "user", content: prompt.value });
    const body = { model: model.value, messages, stream: true, stream_options: { include_usage: true } };
    try {
      if (so.checked) body.structured_output = { format: JSON.parse(soFormat.value) };
      if (rag.value.trim()) body.rag = { collection: rag.value.trim() };
      if (mcp.value.trim()) body.mcp = { servers: mcp.value.split(",").map((s) => s.trim()).filter(Boolean) };
      await streamChat(body, answer, headers, { sources, trace });
    } catch (e) { error.textContent = e.message; }
    finally { send.disabled = false; }
  } }, "Send");
  return [h("h1", {}, "Playground"),
    h("div", { class: "card" },
      h("div", { class: "row" }, h("label", {}, "Model or strategy "), model),
      system, prompt,
      h("div", { class: "row" },
        h("label", {}, so, " structured_output "), soFormat,
        h("label", {}, "rag "), rag, h("label", {}, "mcp "), mcp),
      send, error),
    h("h2", {}, "Answer (streamed)"), answer,
    h("h2", {}, "Sources (rag_context)"), sources, h("h2", {}, "MCP tool calls (tool_trace)"), trace,
    h("h2", {}, "Response headers"), headers];
}

// POST a streaming chat completion and append each delta as it arrives (OpenAI SSE: `data: {...}` lines).
async function streamChat(body, answer, headersEl, extras) {
  const started = new Date(Date.now() - 60e3).toISOString().replace(/\.\d+Z$/, "Z");
  const response = await fetch("/v1/chat/completions", {
    method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + sessionStorage.getItem(KEY) } });
  const shown = ["x-omni-provider", "x-omni-upstream-model", "x-omni-attempts", "x-omni-route-reason", "x-omni-cost-usd",
                 "x-omni-latency-ms", "x-request-id"];
  for (const name of shown) {
    const value = response.headers.get(name);
    if (value !== null) headersEl.append(h("dt", {}, name), h("dd", { "data-header": name }, value));
  }
  if (!response.ok) { const e = await response.json().catch(() => ({})); throw new Error(e?.error?.message || response.statusText); }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", usage = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const events = buffer.split("\n\n"); buffer = events.pop();
    for (const event of events) {
      const line = event.split("\n").find((l) => l.startsWith("data:"));
      if (!line) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      for (const c of chunk.rag_context || [])
        extras.sources.append(h("li", { class: "source" }, `${c.source}${c.page ? " p." + c.page : ""} (score ${c.score}): `,
                                h("span", { class: "muted" }, c.content.slice(0, 160))));
      for (const t of chunk.tool_trace || [])
        extras.trace.append(h("li", { class: "tool-call" + (t.is_error ? " error" : "") },
                              `${t.server}.${t.name}(${JSON.stringify(t.arguments)}) → ${t.result} (${t.duration_ms} ms)`));
      const delta = chunk.choices?.[0]?.delta || {};
      if (delta.content) answer.append(delta.content);
      for (const call of delta.tool_calls || []) if (call.function?.arguments) answer.append(call.function.arguments);
      if (chunk.usage) usage = chunk.usage;
    }
  }
  if (usage) headersEl.append(h("dt", {}, "usage"), h("dd", {}, `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`));
  // A stream's headers leave before its cost is known: read the cost from the usage log (written just after).
  const id = response.headers.get("x-request-id");
  if (response.headers.get("x-omni-cost-usd") === null && id) {
    for (let tries = 0; tries < 20; tries++) {
      const rows = (await api("/admin/usage?limit=200&since=" + encodeURIComponent(started))).data;
      const row = rows.find((r) => r.request_id === id);
      if (row) {
        headersEl.append(h("dt", {}, "cost (usage log)"), h("dd", { "data-header": "x-omni-cost-usd" }, money(row.cost_usd)),
                         h("dt", {}, "total latency"), h("dd", {}, ms(Math.round(row.latency_ms))));
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
  }
}

async function keys() {
  const [list, spent] = await Promise.all([api("/admin/keys"), api("/admin/usage?limit=100000")]);
  const spend = {};
  for (const row of spent.data) if (row.key_id) spend[row.key_id] = (spend[row.key_id] || 0) + (row.cost_usd || 0);
  const field = (id, placeholder, size = 10) => h("input", { id, placeholder, size });
  const name = field("key-name", "name", 14), budget = field("key-budget", "budget USD", 8), rpm = field("key-rpm", "rpm", 5),
        tpm = field("key-tpm", "tpm", 7), allowed = field("key-models", "models (comma-separated, empty: all)", 26);
  const created = h("div", { id: "key-created" }), error = h("p", { class: "error" });
  const num = (input) => (input.value.trim() ? Number(input.value) : undefined);
  const create = h("button", { id: "key-create", onclick: async () => {
    error.textContent = "";
    const fields = { name: name.value, budget_usd: num(budget), rpm: num(rpm), tpm: num(tpm),
                     models: allowed.value.trim() ? allowed.value.split(",").map((s) => s.trim()) : undefined };
    try {
      const key = await api("/admin/keys", { method: "POST", json: fields });
      const table = await keyTable(spend);
      $("#keys-table").replaceWith(table);
      created.replaceChildren(h("p", {}, `Key "${key.name}" created. Copy it now: it is not shown again.`),
                              h("div", { class: "secret", id: "new-key" }, key.key));
    } catch (e) { error.textContent = e.message; }
  } }, "Create key");
  return [h("h1", {}, "Keys"),
    h("div", { class: "card" }, h("div", { class: "row" }, name, budget, rpm, tpm, allowed, create), error, created),
    await keyTable(spend, list)];
}

async function keyTable(spend, list) {
  list = list || await api("/admin/keys");
  const rows = list.data.map((k) => {
    const spent = spend[k.id] || 0;
    const bar = k.budget_usd ? h("span", { class: "bar" + (spent >= k.budget_usd ? " over" : "") }, h("span")) : null;
    if (bar) bar.firstChild.style.width = Math.min(100, (100 * spent) / k.budget_usd) + "%";
    return h("tr", { "data-key": k.id },
      h("td", {}, h("strong", {}, k.name), h("div", { class: "muted" }, `${k.prefix}… · ${k.id}`)),
      h("td", { class: k.status === "active" ? "ok key-status" : "muted key-status" }, k.status),
      h("td", {}, (k.models || ["all"]).join(", ")),
      h("td", {}, `rpm ${k.rpm ?? "–"} · tpm ${k.tpm ?? "–"}`),
      h("td", {}, bar, " ", money(spent), k.budget_usd ? ` of ${money(k.budget_usd)}${k.budget_period ? " / " + k.budget_period : ""}` : ""),
      h("td", {}, k.status === "revoked" ? "" : h("button", { class: "secondary revoke", onclick: async () => {
        await api("/admin/keys/" + encodeURIComponent(k.id), { method: "DELETE" }); route(); } }, "Revoke")));
  });
  return h("table", { id: "keys-table" },
    h("tr", {}, ["Key", "Status", "Models", "Limits", "Spend (usage log)", ""].map((t) => h("th", {}, t))), rows);
}

// Stacked bars of `value(row)` per time bucket over [start, end), one colour per `group(row)`: inline SVG, no library.
function chart(rows, group, value, title, format, start, end, step) {
  const width = 560, height = 200, pad = 36;
  const count = Math.ceil((end - start) / step), slot = (width - 2 * pad) / count;
  const buckets = Array.from({ length: count }, () => ({})), groups = [...new Set(rows.map(group))];
  for (const r of rows) {
    const i = Math.floor((Date.parse(r.created_at) - start) / step);
    if (i >= 0 && i < count) buckets[i][group(r)] = (buckets[i][group(r)] || 0) + value(r);
  }
  const max = Math.max(...buckets.map((b) => Object.values(b).reduce((x, y) => x + y, 0))) || 1;
  const label = (t) => new Date(t).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const svg = h("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title },
    h("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#9ca3af" }),
    h("line", { x1: pad, y1: pad, x2: width - pad, y2: pad, stroke: "#e5e7eb" }),
    h("text", { x: pad, y: pad - 6, "font-size": 10, fill: "#6b7280" }, format(max)),
    h("text", { x: pad, y: height - pad + 14, "font-size": 10, fill: "#6b7280" }, label(start)),
    h("text", { x: width - pad, y: height - pad + 14, "font-size": 10, fill: "#6b7280", "text-anchor": "end" }, "now"));
  buckets.forEach((bucket, i) => {
    let y = height - pad;
    groups.forEach((g, gi) => {
      const v = bucket[g] || 0;
      if (!v) return;
      const barH = Math.max(1, ((height - 2 * pad) * v) / max); y -= barH;
      svg.append(h("rect", { class: "bar-rect", x: pad + i * slot + 0.5, y, width: Math.max(1, slot - 1), height: barH,
                             fill: COLORS[gi % COLORS.length] }, h("title", {}, `${g}: ${format(v)} at ${label(start + i * step)}`)));
    });
  });
  const legend = h("div", { class: "legend" }, groups.map((g, gi) => { const i = h("i"); i.style.background = COLORS[gi % COLORS.length]; return h("span", {}, i, g); }));
  return h("div", { class: "card chart" }, h("h2", {}, title), rows.length ? svg : h("p", { class: "muted" }, "No usage in this range."), legend);
}

// Range -> bucket: ~30-60 bars whatever the range.
const RANGES = [[1, "last hour", 60e3], [24, "last 24 hours", 1800e3], [168, "last 7 days", 4 * 3600e3], [720, "last 30 days", 86400e3]];

async function usage() {
  const hours = Number(sessionStorage.getItem("omni-usage-hours") || 1);
  const step = (RANGES.find(([v]) => v === hours) || RANGES[0])[2];
  const end = Math.ceil(Date.now() / step) * step, start = end - hours * 3600e3;
  const since = new Date(start).toISOString().replace(/\.\d+Z$/, "Z");
  const [{ data, total }, keyList] = await Promise.all([api("/admin/usage?limit=100000&since=" + encodeURIComponent(since)), api("/admin/keys")]);
  const names = Object.fromEntries(keyList.data.map((k) => [k.id, `${k.name} (${k.id})`]));
  const range = h("select", { id: "usage-range", onchange: (e) => { sessionStorage.setItem("omni-usage-hours", e.target.value); route(); } },
    RANGES.map(([v, t]) => h("option", { value: v, selected: v === hours }, t)));
  const tokens = (r) => r.prompt_tokens + r.completion_tokens;
  const byKey = (r) => (r.key_id ? names[r.key_id] || r.key_id : "master key");
  const draw = (g, v, title, f) => chart(data, g, v, title, f, start, end, step);
  return [h("h1", {}, "Usage"), h("div", { class: "row" }, range,
      h("span", { id: "usage-total" }, `${total.requests} requests · ${total.prompt_tokens + total.completion_tokens} tokens · ${money(total.cost_usd)}`)),
    h("div", { id: "usage-charts", class: "grid" },
      draw((r) => r.model, (r) => r.cost_usd || 0, "Spend by model", money),
      draw((r) => r.model, tokens, "Tokens by model", String),
      draw(byKey, (r) => r.cost_usd || 0, "Spend by key", money),
      draw(byKey, tokens, "Tokens by key", String))];
}

async function collections() {
  let stores;
  try { stores = await api("/v1/vector_stores"); }
  catch (e) { if (e.status === 404) return [h("h1", {}, "Collections"), h("p", { class: "muted", id: "rag-off" }, "RAG is not enabled on this gateway (no /v1/vector_stores).")]; throw e; }
  const pick = h("select", { id: "col-pick" }, stores.data.map((s) => h("option", { value: s.id }, `${s.name} (${plural(s.file_counts?.completed ?? 0, "file")})`)));
  const newName = h("input", { id: "col-new", placeholder: "new collection name" });
  const file = h("input", { type: "file", id: "col-file" });
  const status = h("p", { class: "muted", id: "col-status" });
  const query = h("input", { id: "col-query", placeholder: "search…", size: 40 });
  const results = h("div", { id: "col-results" });
  const upload = h("button", { id: "col-upload", onclick: async () => {
    try {
      let id = pick.value;
      if (newName.value.trim()) id = (await api("/v1/vector_stores", { method: "POST", json: { name: newName.value.trim() } })).id;
      if (!id) throw new Error("Pick or name a collection first.");
      const form = new FormData(); form.append("purpose", "assistants"); form.append("file", file.files[0]);
      const uploaded = await api("/v1/files", { method: "POST", body: form });
      await api(`/v1/vector_stores/${id}/files`, { method: "POST", json: { file_id: uploaded.id } });
      status.textContent = `Uploaded ${uploaded.filename}.`;
      await route();
    } catch (e) { status.textContent = e.message; }
  } }, "Upload");
  const search = h("button", { id: "col-search", onclick: async () => {
    const page = await api(`/v1/vector_stores/${pick.value}/search`, { method: "POST", json: { query: query.value } });
    results.replaceChildren(...(page.data.length ? page.data.map((r) => h("div", { class: "chunk" },
      h("div", { class: "muted" }, `${r.filename || r.attributes?.source || r.file_id}` + (r.attributes?.page ? ` · page ${r.attributes.page}` : "") + ` · score ${r.score.toFixed(3)}`),
      (r.content || []).map((c) => h("div", {}, c.text)))) : [h("p", { class: "muted" }, "No matches.")]));
  } }, "Search");
  return [h("h1", {}, "Collections"),
    h("div", { class: "card" }, h("div", { class: "row" }, pick, newName, file, upload), status),
    h("div", { class: "card" }, h("div", { class: "row" }, query, search), results)];
}

async function tools() {
  let body;
  try { body = await api("/v1/mcp/tools"); }
  catch (e) { if (e.status === 404) return [h("h1", {}, "Tools"), h("p", { class: "muted" }, "MCP is not enabled.")]; throw e; }
  const byServer = {};
  for (const t of body.data) (byServer[t.server] ||= []).push(t.function);
  const sections = Object.entries(byServer).map(([server, fns]) => h("div", { class: "card mcp-server", "data-server": server },
    h("h2", {}, server), h("table", {}, fns.map((f) => h("tr", {}, h("td", {}, h("code", {}, f.name)), h("td", {}, f.description || ""))))));
  const down = (body.unavailable || []).map((u) => h("p", { class: "bad" }, `${u.server}: unavailable — ${u.message}`));
  return [h("h1", {}, "Tools"), sections.length || down.length ? [sections, down] : h("p", { class: "muted", id: "tools-empty" }, "No MCP servers configured (mcp_servers in models.yaml).")];
}

$("#login-form").addEventListener("submit", login);
$("#logout").addEventListener("click", logout);
window.addEventListener("hashchange", () => sessionStorage.getItem(KEY) && route());
show();
