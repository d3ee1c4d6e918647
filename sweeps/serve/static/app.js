// stoprace dashboard: plain JS over the JSON API (no framework, no CDN).
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};

async function api(path, opts = {}) {
  const r = await fetch(path, opts);
  const ct = r.headers.get("content-type") || "";
  const body = ct.includes("json") ? await r.json() : await r.blob();
  if (!r.ok) throw new Error((body && body.error) || `HTTP ${r.status}`);
  return body;
}

// ---- number formatting (as the CLI's tables: probabilities 3 significant digits, others 4) ----
function isProb(name) {
  return name.startsWith("p_") || name.endsWith("_lo") || name.endsWith("_hi") || name.includes("ratio");
}
function fmt(name, v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "number") {
    if (Number.isInteger(v) && Math.abs(v) < 1e7) return String(v);
    if (v === 0) return "0";
    return String(Number(v.toPrecision(isProb(name) ? 3 : 4)));
  }
  if (Array.isArray(v)) return "[" + v.slice(0, 6).join(", ") + (v.length > 6 ? ", …" : "") + "]";
  return String(v);
}

// A sortable table from an array of row objects; rowClass(row) names a row's class (default: "bad" where
// the row has races, hangs or timeouts).
function renderTable(table, rows, columns, state, rowClass) {
  table.replaceChildren();
  const head = el("tr");
  for (const c of columns) {
    const th = el("th", { text: c, "data-col": c });
    if (state && state.sort === c) th.className = state.desc ? "desc" : "asc";
    if (state) th.addEventListener("click", () => {
      state.desc = state.sort === c ? !state.desc : false;
      state.sort = c;
      state.redraw();
    });
    head.append(th);
  }
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const r of rows) {
    const tr = el("tr");
    const cls = rowClass ? rowClass(r) : ((r.race || 0) + (r.hang || 0) + (r.timeout || 0) > 0 ? "bad" : "");
    if (cls) tr.className = cls;
    for (const c of columns) {
      const v = r[c];
      tr.append(el("td", { text: fmt(c, v), class: typeof v === "number" ? "num" : "" }));
    }
    body.append(tr);
  }
  table.append(body);
}

function sortRows(rows, state) {
  if (!state.sort) return rows;
  const k = state.sort, s = state.desc ? -1 : 1;
  return [...rows].sort((a, b) => {
    const x = a[k], y = b[k];
    if (x === y) return 0;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * s;
  });
}

// filter: "col op value" (op one of < <= > >= = !=) or plain text matched against every cell
function rowFilter(text) {
  text = text.trim();
  if (!text) return () => true;
  const m = text.match(/^([a-z_0-9]+)\s*(<=|>=|!=|=|<|>)\s*(.+)$/i);
  if (m) {
    const [, col, op, raw] = m;
    const num = Number(raw), val = isNaN(num) ? raw.replace(/^'(.*)'$/, "$1") : num;
    return (r) => {
      const v = r[col];
      if (v === undefined || v === null) return false;
      switch (op) {
        case "<": return v < val; case "<=": return v <= val; case ">": return v > val;
        case ">=": return v >= val; case "=": return v == val; default: return v != val;
      }
    };
  }
  const t = text.toLowerCase();
  return (r) => Object.values(r).some((v) => String(v).toLowerCase().includes(t));
}

// ---- sweeps list ----
let current = null;     // name of the sweep shown
let sweepInfo = null;   // GET /api/sweeps/{name}

let lastList = "";
async function refreshList() {
  let sweeps;
  try { sweeps = await api("/api/sweeps"); } catch (e) { return; }
  const text = JSON.stringify(sweeps);
  if (text === lastList) return;  // unchanged: keep the rows (and whatever the user is pointing at)
  lastList = text;
  const body = $("#sweeps tbody");
  body.replaceChildren();
  for (const s of sweeps) {
    const pct = Math.round((s.progress || 0) * 1000) / 10;
    const bar = el("span", { class: "bar" }, el("div", { style: `width:${pct}%` }));
    const tasks = s.tasks_total === null || s.tasks_total === undefined ? `${s.tasks_done}` : `${s.tasks_done}/${s.tasks_total}`;
    const tr = el("tr", { "data-name": s.name, "data-status": s.status, "data-progress": String(s.progress || 0),
                          class: "status-" + s.status },
      el("td", {}, el("a", { href: "#/s/" + encodeURIComponent(s.name), text: s.name })),
      el("td", { text: s.status + (s.run && s.run.message && s.status === "failed" ? ": " + s.run.message : ""),
                 title: s.problem || "" }),
      el("td", {}, bar, el("span", { class: "pct", text: ` ${pct}%` })),
      el("td", { class: "num", text: tasks }),
      el("td", { class: "num", text: s.points === null ? "-" : String(s.points) }),
      el("td", { class: "hint", text: s.location }));
    body.append(tr);
    if (s.name === current) $("#sweep-status").textContent = `${s.status}, ${pct}%`;
  }
  // the compare pickers: every sweep, keeping what is picked
  for (const [id, k] of [["#cmp-a", 0], ["#cmp-b", 1]]) {
    const sel = $(id), keep = sel.value;
    sel.replaceChildren(...sweeps.map((s) => el("option", { value: s.name, text: s.name })));
    if (keep && sweeps.some((s) => s.name === keep)) sel.value = keep;
    else if (sweeps.length > k) sel.value = sweeps[k].name;
  }
}

$("#submit").addEventListener("click", async () => {
  const msg = $("#submit-msg");
  msg.className = "msg"; msg.textContent = "";
  try {
    const r = await api("/api/sweeps", { method: "POST", headers: { "Content-Type": "application/toml" }, body: $("#spec").value });
    msg.className = "msg ok";
    msg.textContent = `${r.name}: ${r.status} -> ${r.location}`;
    refreshList();
  } catch (e) { msg.textContent = e.message; }
});

// ---- one sweep ----
const outcomesState = { sort: null, desc: false, rows: [], redraw: drawOutcomes };

async function showSweep(name) {
  current = name;
  $("#sweep-view").hidden = false;
  $("#sweep-name").textContent = name;
  try { sweepInfo = await api("/api/sweeps/" + encodeURIComponent(name)); }
  catch (e) { $("#sweep-meta").textContent = e.message; return; }
  const axes = Object.keys(sweepInfo.axes || {});
  $("#sweep-meta").textContent = `${sweepInfo.points ?? "?"} points; swept: ` +
    axes.map((a) => `${a} (${sweepInfo.axes[a].length})`).join(", ") + ` — ${sweepInfo.location}`;
  // capacity: one checkbox per swept axis except n_cpus
  const by = $("#cap-by");
  by.replaceChildren();
  for (const a of axes.filter((a) => a !== "n_cpus")) {
    by.append(el("label", {}, el("input", { type: "checkbox", value: a, class: "cap-by-axis" }), " " + a + " "));
  }
  // plot pickers
  for (const [id, opts] of [["#plot-x", axes], ["#plot-y", axes], ["#plot-lines", axes], ["#plot-metric", sweepInfo.metrics || []]]) {
    const s = $(id);
    s.replaceChildren(...opts.map((o) => el("option", { value: o, text: o })));
  }
  if (axes.length > 1) $("#plot-y").value = axes[1];
  if (axes.includes("n_cpus")) $("#plot-x").value = "n_cpus";
  if (axes.length > 1 && $("#plot-x").value === $("#plot-y").value) $("#plot-y").value = axes.find((a) => a !== $("#plot-x").value);
  $("#plot-lines").value = $("#plot-y").value;
  $("#plot-metric").value = "p_bad";
  loadOutcomes();
  loadEvents();
  refreshList();
}

async function loadOutcomes() {
  try {
    outcomesState.rows = await api(`/api/sweeps/${encodeURIComponent(current)}/outcomes`);
  } catch (e) { $("#outcomes-count").textContent = e.message; outcomesState.rows = []; }
  drawOutcomes();
}

function outcomeColumns(rows) {
  if (!rows.length) return [];
  if ($("#outcomes-all").checked) return Object.keys(rows[0]);
  const axes = Object.keys((sweepInfo && sweepInfo.axes) || {});
  const keep = [...axes, "trials", "race", "hang", "timeout", "p_bad", "p_bad_lo", "p_bad_hi", "t_p50_us", "t_p99_us", "point_id"];
  return keep.filter((c) => c in rows[0]);
}

function drawOutcomes() {
  const rows = sortRows(outcomesState.rows.filter(rowFilter($("#outcomes-filter").value)), outcomesState);
  renderTable($("#outcomes-table"), rows, outcomeColumns(outcomesState.rows), outcomesState);
  $("#outcomes-count").textContent = `${rows.length} of ${outcomesState.rows.length} points`;
}
$("#outcomes-filter").addEventListener("input", drawOutcomes);
$("#outcomes-all").addEventListener("change", drawOutcomes);

// capacity
const capState = { sort: null, desc: false, redraw: () => drawCap() };
let capData = null;
function drawCap() {
  if (!capData) return;
  const rows = sortRows(capData.limits, capState);
  renderTable($("#cap-table"), rows, rows.length ? Object.keys(rows[0]) : [], capState);
  if (capData.fleet) {
    $("#fleet-title").hidden = false;
    renderTable($("#fleet-table"), capData.fleet, capData.fleet.length ? Object.keys(capData.fleet[0]) : []);
  } else { $("#fleet-title").hidden = true; $("#fleet-table").replaceChildren(); }
}
async function loadCapacity() {
  const msg = $("#cap-msg");
  msg.textContent = "";
  const q = new URLSearchParams({ target_p: $("#target-p").value.trim(), metric: $("#cap-metric").value });
  const by = [...document.querySelectorAll(".cap-by-axis:checked")].map((c) => c.value);
  if (by.length) q.set("by", by.join(","));
  const where = $("#cap-where").value.trim();
  if (where) q.set("where", where);
  const hosts = $("#cap-hosts").value.trim(), kx = $("#cap-kexecs").value.trim();
  if (hosts) q.set("hosts", hosts);
  if (kx) q.set("kexecs_per_host_year", kx);
  if ($("#cap-partial").checked) q.set("partial", "true");
  try {
    capData = await api(`/api/sweeps/${encodeURIComponent(current)}/capacity?${q}`);
    $("#cap-notes").textContent = [...(capData.partial || []), ...capData.notes].join(" ");
    drawCap();
  } catch (e) { msg.textContent = e.message; capData = null; $("#cap-table").replaceChildren(); }
}
$("#cap-go").addEventListener("click", loadCapacity);
$("#target-p").addEventListener("keydown", (e) => { if (e.key === "Enter") loadCapacity(); });

// plot
$("#plot-kind").addEventListener("change", () => {
  const lines = $("#plot-kind").value === "lines";
  $("#plot-y-label").hidden = lines;
  $("#plot-lines-label").hidden = !lines;
});
async function loadPlot() {
  const msg = $("#plot-msg"), img = $("#plot-img");
  msg.textContent = "";
  const q = new URLSearchParams({ x: $("#plot-x").value, metric: $("#plot-metric").value });
  if ($("#plot-kind").value === "heatmap") q.set("y", $("#plot-y").value); else q.set("lines", $("#plot-lines").value);
  const where = $("#plot-where").value.trim();
  if (where) q.set("where", where);
  try {
    const blob = await api(`/api/sweeps/${encodeURIComponent(current)}/plot.svg?${q}`);
    if (img.src) URL.revokeObjectURL(img.src);
    img.onload = () => img.setAttribute("data-loaded", q.toString());
    img.src = URL.createObjectURL(blob);
    img.hidden = false;
  } catch (e) { msg.textContent = e.message; img.hidden = true; }
}
$("#plot-go").addEventListener("click", loadPlot);

// mitigation comparison
async function loadMitigation() {
  $("#mit-msg").textContent = "";
  try {
    const rows = await api(`/api/sweeps/${encodeURIComponent(current)}/named/mitigation_effect`);
    renderTable($("#mit-table"), rows, rows.length ? Object.keys(rows[0]) : []);
    if (!rows.length) $("#mit-msg").textContent = "no rows (is mitigation swept?)";
  } catch (e) { $("#mit-msg").textContent = e.message; }
}

// importance: one bar chart per scenario for the picked metric (first-order and total shares, noise share)
async function loadImportance() {
  const msg = $("#imp-msg");
  msg.textContent = "";
  const q = new URLSearchParams({ metric: $("#imp-metric").value });
  const by = $("#imp-by").value.trim(), where = $("#imp-where").value.trim();
  if (by) q.set("by", by);
  if (where) q.set("where", where);
  try {
    drawImportance(await api(`/api/sweeps/${encodeURIComponent(current)}/importance?${q}`));
  } catch (e) { msg.textContent = e.message; $("#imp-charts").replaceChildren(); }
}
$("#imp-go").addEventListener("click", loadImportance);
$("#imp-metric").addEventListener("change", loadImportance);

function drawImportance(d) {
  const box = $("#imp-charts");
  box.replaceChildren();
  const groups = [];
  for (const r of d.rows) {
    const key = r.sweep + "\u0000" + r.scenario;
    if (!groups.length || groups[groups.length - 1].key !== key) groups.push({ key, sweep: r.sweep, scenario: r.scenario, rows: [] });
    groups[groups.length - 1].rows.push(r);
  }
  const many = new Set(groups.map((g) => g.sweep)).size > 1;
  groups.forEach((g, i) => {
    const title = (many ? g.sweep + " " : "") + (g.scenario || "all points");
    const block = el("div", { class: "imp-block", "data-scenario": g.scenario, "data-metric": d.metric },
      el("h4", { text: `${title}: log10 ${d.metric}` }), importanceChart(g.rows),
      el("div", { class: "hint imp-verdict", text: d.verdicts[i] || "" }));
    box.append(block);
  });
  box.append(el("div", { class: "hint", text: d.notes.join(" ") }));
}

const pct = (v) => (v === null || v === undefined ? "-" : `${(100 * v).toFixed(1)}%`);

function importanceChart(rows) {
  const left = 120, barW = 300, rowH = 24, top = 8, W = left + barW + 80;
  const items = [...rows.map((r) => ({ label: r.axis, first: r.first_order, total: r.total })),
                 { label: "MC noise", noise: rows[0].noise_share }];
  const H = top + rowH * items.length + 28;
  const X = (v) => left + barW * Math.min(1, Math.max(0, v));
  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "imp-chart" });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(s("line", { x1: X(t), x2: X(t), y1: top - 2, y2: top + rowH * items.length, stroke: "#eee" }));
    svg.append(s("text", { x: X(t), y: H - 12, "font-size": 10, "text-anchor": "middle", fill: "#666" }, `${t * 100}%`));
  }
  items.forEach((it, i) => {
    const y = top + i * rowH;
    svg.append(s("text", { x: left - 6, y: y + 16, "font-size": 12, "text-anchor": "end" }, it.label));
    const bar = (v, cls, color, dy, h) => {
      if (v === null || v === undefined) return;
      svg.append(s("rect", { x: left, y: y + dy, width: Math.max(0, X(v) - left), height: h, fill: color, class: cls,
                             "data-axis": it.label, "data-value": String(v) }));
    };
    if ("noise" in it) {
      bar(it.noise, "noise", "#9e9e9e", 5, 14);
      svg.append(s("text", { x: X(it.noise) + 4, y: y + 16, "font-size": 11, fill: "#555" }, pct(it.noise)));
    } else {
      bar(it.total, "total", "#90caf9", 3, 18);
      bar(it.first, "first", "#1565c0", 7, 10);
      svg.append(s("text", { x: Math.max(X(it.total ?? 0), X(it.first ?? 0)) + 4, y: y + 16, "font-size": 11, fill: "#333" },
        `${pct(it.first)} / ${pct(it.total)}`));
    }
  });
  return svg;
}

// compare two sweeps: a table sortable by ratio, the points that changed highlighted
const CMP_HIDDEN = ["point_a", "point_b", "estimator_a", "estimator_b", "trials_a", "trials_b"];
const cmpState = { sort: "ratio", desc: true, redraw: () => drawCompare() };
let cmpPair = null, cmpData = null;
$("#cmp-open").addEventListener("click", () => {
  location.hash = `#/compare/${encodeURIComponent($("#cmp-a").value)}/${encodeURIComponent($("#cmp-b").value)}`;
});
function showCompare(a, b) {
  cmpPair = [a, b];
  $("#compare-view").hidden = false;
  $("#cmp-title").textContent = `A = ${a}, B = ${b}`;
  loadCompare();
}
async function loadCompare() {
  const msg = $("#cmp-msg");
  msg.textContent = "";
  const q = new URLSearchParams({ a: cmpPair[0], b: cmpPair[1], metric: $("#cmp-metric").value });
  const on = $("#cmp-on").value.trim(), where = $("#cmp-where").value.trim();
  if (on) q.set("on", on);
  if (where) q.set("where", where);
  try {
    cmpData = await api(`/api/compare?${q}`);
    $("#cmp-verdict").textContent = cmpData.verdict;
    $("#cmp-notes").textContent = cmpData.notes.join(" ");
  } catch (e) {
    msg.textContent = e.message; cmpData = null;
    $("#cmp-verdict").textContent = ""; $("#cmp-notes").textContent = "";
  }
  drawCompare();
}
function drawCompare() {
  const t = $("#cmp-table");
  if (!cmpData) { t.replaceChildren(); return; }
  const all = cmpData.rows;
  const rows = sortRows($("#cmp-only").checked ? all.filter((r) => r.changed) : all, cmpState);
  const cols = all.length ? Object.keys(all[0]).filter((c) => !CMP_HIDDEN.includes(c)) : [];
  renderTable(t, rows, cols, cmpState, (r) => (r.changed ? "changed" : ""));
}
$("#cmp-go").addEventListener("click", loadCompare);
$("#cmp-only").addEventListener("change", drawCompare);

// replay
async function loadEvents() {
  const t = $("#rp-events");
  t.replaceChildren();
  try {
    const r = await api("/api/query", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sweeps: [current], sql: "SELECT point_id, shard, trial, outcome, nmi_sent, racers, overlap_us FROM events ORDER BY outcome, point_id, shard, trial LIMIT 200" }),
    });
    renderTable(t, r.rows, r.columns);
    t.querySelectorAll("tbody tr").forEach((tr, i) => {
      tr.style.cursor = "pointer";
      tr.addEventListener("click", () => {
        const e = r.rows[i];
        $("#rp-point").value = e.point_id; $("#rp-shard").value = e.shard; $("#rp-trial").value = e.trial;
        loadReplay();
      });
    });
    if (r.rows.length && !$("#rp-point").value) {
      $("#rp-point").value = r.rows[0].point_id; $("#rp-shard").value = r.rows[0].shard; $("#rp-trial").value = r.rows[0].trial;
    }
  } catch (e) { $("#rp-msg").textContent = e.message; }
}

async function loadReplay() {
  $("#rp-msg").textContent = "";
  const q = new URLSearchParams({ point: $("#rp-point").value.trim(), shard: $("#rp-shard").value.trim(), trial: $("#rp-trial").value.trim() });
  try {
    const r = await api(`/api/sweeps/${encodeURIComponent(current)}/replay?${q}`);
    const us = (x) => (x === null || x === undefined ? "-" : fmt("t_us", x) + " µs");
    $("#rp-summary").textContent = `outcome ${r.outcome}; stop done at ${us(r.t_done_us)}; NMIs sent ${r.nmi_sent}; ` +
      `racers ${r.racers}; overlap ${us(r.overlap_us)}; n_cpus ${r.params.n_cpus}, mitigation ${r.params.mitigation}, wait ${r.params.wait}`;
    $("#rp-chart").replaceChildren(drawTimeline(r));
  } catch (e) { $("#rp-msg").textContent = e.message; $("#rp-chart").replaceChildren(); }
}
$("#rp-go").addEventListener("click", loadReplay);

// One trial's per-CPU timeline as SVG. Time axis: log10(1 + t/µs), since a trial spans µs (IPIs) to ~1 s (the wait).
const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
const COLORS = { ipi: "#1e88e5", off: "#ffb74d", wbinvd: "#e53935", clear: "#2e7d32", nmi: "#8e24aa", handler: "#ce93d8", handover: "#90a4ae" };

function pickCpus(r, limit = 24) {
  const cpus = r.cpus;
  if (cpus.length <= limit) return cpus;
  const keep = new Set(cpus.filter((c) => c.nmi_send !== null || c.racer || c.dead).map((c) => c.cpu));
  const byClear = [...cpus].sort((a, b) => (b.clear ?? Infinity) - (a.clear ?? Infinity));
  for (const c of byClear) { if (keep.size >= limit) break; keep.add(c.cpu); }
  return cpus.filter((c) => keep.has(c.cpu));
}

function drawTimeline(r) {
  const cpus = pickCpus(r);
  const handoff = r.params.handoff_us;
  const times = [r.t1_us, r.t_nmi_us, r.t_done_us, r.deadline_us, r.t_loop_us];
  for (const c of cpus) times.push(c.ipi, c.off, c.clear, c.final_clear, c.nmi_arrive,
    c.nmi_arrive !== null && c.handler_us !== null ? c.nmi_arrive + c.handler_us : null);
  if (r.t_done_us !== null) times.push(r.t_done_us + handoff);
  const tmax = Math.max(10, ...times.filter((t) => t !== null && t !== undefined && isFinite(t)));
  const W = 1000, left = 70, right = 20, top = 48, rowH = 16, H = top + rowH * cpus.length + 70;
  const L = (t) => Math.log10(1 + Math.max(t, 0));
  const X = (t) => left + (W - left - right) * L(t) / L(tmax * 1.05);
  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, id: "replay-svg", "data-cpus": cpus.length, "data-outcome": r.outcome });
  // decade grid
  for (let d = 0; 10 ** d <= tmax * 1.05; d++) {
    const x = X(10 ** d);
    svg.append(s("line", { x1: x, x2: x, y1: top - 4, y2: H - 60, stroke: "#eee" }));
    svg.append(s("text", { x, y: H - 46, "font-size": 10, "text-anchor": "middle", fill: "#666" }, d < 3 ? `${10 ** d} µs` : d < 6 ? `${10 ** (d - 3)} ms` : `${10 ** (d - 6)} s`));
  }
  svg.append(s("text", { x: W / 2, y: H - 32, "font-size": 11, "text-anchor": "middle" }, "time since the REBOOT IPI broadcast (log scale)"));
  // hand-over window and phase marks
  if (r.t_done_us !== null) {
    svg.append(s("rect", { x: X(r.t_done_us), y: top - 6, width: Math.max(2, X(r.t_done_us + handoff) - X(r.t_done_us)), height: rowH * cpus.length + 8, fill: COLORS.handover, opacity: 0.35, class: "handover" }));
  }
  // phase marks; labels stacked (they are often a few µs apart, i.e. at the same x)
  const mark = (t, label, color, k) => {
    if (t === null || t === undefined || !isFinite(t)) return;
    svg.append(s("line", { x1: X(t), x2: X(t), y1: top - 8 - 12 * k, y2: top + rowH * cpus.length, stroke: color, "stroke-dasharray": "4 3" }));
    svg.append(s("text", { x: X(t) - 3, y: top - 10 - 12 * k, "font-size": 10, fill: color, "text-anchor": "end" }, label));
  };
  mark(r.t1_us, "end of REBOOT wait", "#555", 0);
  mark(r.t_nmi_us, "NMIs sent", COLORS.nmi, 1);
  mark(r.t_done_us, "hand-over", "#37474f", 2);
  cpus.forEach((c, i) => {
    const y = top + i * rowH, mid = y + rowH / 2;
    const g = s("g", { class: "cpu", "data-cpu": c.cpu });
    if (c.races) g.append(s("rect", { x: left, y, width: W - left - right, height: rowH, fill: "#ffebee" }));
    g.append(s("text", { x: left - 6, y: mid + 4, "font-size": 10, "text-anchor": "end", fill: c.races ? "#b71c1c" : "#333" }, `cpu ${c.cpu}`));
    // irqs off until `off`
    g.append(s("rect", { x: X(0), y: y + 3, width: Math.max(1, X(c.off) - X(0)), height: rowH - 6, fill: COLORS.off, class: "irqs-off" }));
    // WBINVD inside stop_this_cpu() (dirty CPUs), ending at the clear
    if (c.dirty && c.clear !== null && c.wbinvd_us > 0) {
      g.append(s("rect", { x: X(c.clear - c.wbinvd_us), y: y + 2, width: Math.max(2, X(c.clear) - X(c.clear - c.wbinvd_us)), height: rowH - 4, fill: COLORS.wbinvd, class: "wbinvd" }));
    }
    // the IPI
    g.append(s("path", { d: `M${X(c.ipi)},${y + 1} l4,0 l-4,7 l-4,-7 z`, fill: COLORS.ipi, class: "ipi" }));
    // NMI sent, arrived, handler (stop_this_cpu() again)
    if (c.nmi_send !== null) {
      g.append(s("circle", { cx: X(c.nmi_send), cy: mid, r: 3, fill: "none", stroke: COLORS.nmi, class: "nmi" }));
      if (c.nmi_arrive !== null) {
        g.append(s("circle", { cx: X(c.nmi_arrive), cy: mid, r: 3.5, fill: COLORS.nmi, class: "nmi" }));
        if (c.handler_us !== null) {
          g.append(s("rect", { x: X(c.nmi_arrive), y: y + 5, width: Math.max(2, X(c.nmi_arrive + c.handler_us) - X(c.nmi_arrive)), height: rowH - 10, fill: COLORS.handler, stroke: COLORS.nmi, class: "handler" }));
        }
      }
    }
    // the clear of its bit in cpus_stop_mask (never, for a dead CPU)
    if (c.dead || c.clear === null) {
      g.append(s("text", { x: W - right - 2, y: mid + 4, "font-size": 10, "text-anchor": "end", fill: "#b71c1c" }, "never clears"));
    } else {
      g.append(s("rect", { x: X(c.clear) - 1.5, y: y + 1, width: 3, height: rowH - 2, fill: COLORS.clear, class: "clear" }));
    }
    svg.append(g);
  });
  // legend
  const items = [["IPI arrives", COLORS.ipi], ["irqs off", COLORS.off], ["WBINVD", COLORS.wbinvd], ["NMI sent/arrives", COLORS.nmi],
                 ["NMI handler", COLORS.handler], ["clear", COLORS.clear], ["hand-over window", COLORS.handover]];
  let lx = left;
  for (const [label, color] of items) {
    svg.append(s("rect", { x: lx, y: H - 20, width: 10, height: 10, fill: color }));
    svg.append(s("text", { x: lx + 14, y: H - 11, "font-size": 11 }, label));
    lx += 28 + label.length * 6.2;
  }
  return svg;
}

// ---- tabs and routing ----
function showTab(tab) {
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("on", b.dataset.tab === tab));
  document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== "tab-" + tab; });
  if (tab === "mitigation") loadMitigation();
  if (tab === "importance") loadImportance();
}
document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));

function route() {
  const m = location.hash.match(/^#\/s\/(.+)$/);
  const c = location.hash.match(/^#\/compare\/([^/]+)\/([^/]+)$/);
  if (!c) { cmpPair = null; $("#compare-view").hidden = true; }
  if (m) { showSweep(decodeURIComponent(m[1])); showTab("outcomes"); }
  else { current = null; $("#sweep-view").hidden = true; }
  if (c) showCompare(decodeURIComponent(c[1]), decodeURIComponent(c[2]));
}
window.addEventListener("hashchange", route);
route();
refreshList();
setInterval(refreshList, 1000);
