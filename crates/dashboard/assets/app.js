// The Trellis dashboard: renders the state the server sends (GET /api/state, then
// server-sent events on /api/events). No framework, no build step.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const fixed = (v, d) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));

// Columns by depth: a node's column is one more than its deepest caller's (callers
// first: the client and gateways on the left).
function layout(nodes, edges) {
  const ids = new Set(nodes.map((n) => n.id));
  for (const e of edges) { ids.add(e.source); ids.add(e.destination); }
  const depth = new Map([...ids].map((id) => [id, 0]));
  for (let round = 0; round < ids.size; round++) {
    let moved = false;
    for (const e of edges) {
      if (e.source === e.destination) continue;
      const d = depth.get(e.source) + 1;
      if (d > depth.get(e.destination) && d < ids.size) { depth.set(e.destination, d); moved = true; }
    }
    if (!moved) break;
  }
  const columns = new Map();
  for (const id of [...ids].sort()) {
    const d = depth.get(id);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(id);
  }
  const pos = new Map();
  const W = 170, H = 46, GX = 260, GY = 78;
  let height = 0;
  for (const [d, col] of columns) {
    col.forEach((id, i) => pos.set(id, { x: 20 + d * GX, y: 20 + i * GY, w: W, h: H }));
    height = Math.max(height, 20 + col.length * GY);
  }
  return { pos, width: 40 + columns.size * GX, height };
}

function renderGraph(state) {
  const svg = $("#graph");
  svg.replaceChildren();
  const byId = new Map(state.nodes.map((n) => [n.id, n]));
  const { pos, width, height } = layout(state.nodes, state.edges);
  svg.setAttribute("viewBox", `0 0 ${width} ${Math.max(height, 120)}`);
  svg.setAttribute("height", Math.max(height, 120));
  const defs = el("svg:defs");
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
  marker.append(el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8792a6" }));
  defs.append(marker);
  svg.append(defs);
  for (const e of state.edges) {
    const a = pos.get(e.source), b = pos.get(e.destination);
    if (!a || !b) continue;
    const cls = ["edge", e.mtls ? "mtls" : "plain", e.error_rate > 0.05 ? "errors" : "", e.rps > 0 ? "" : "idle"].join(" ").trim();
    const g = el("svg:g", { class: cls, "data-source": e.source, "data-destination": e.destination, "data-mtls": String(e.mtls), "data-rps": fixed(e.rps, 2) });
    const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
    const mx = (x1 + x2) / 2;
    g.append(el("svg:path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, "stroke-width": String(1.5 + Math.min(4, Math.log10(1 + e.rps) * 2)), "marker-end": "url(#arrow)" }));
    // The rate on the edge, near its target; the rest in its tooltip and the table.
    g.append(el("svg:title", {}, `${e.source} → ${e.destination}: ${fixed(e.rps, 1)} req/s, ${fixed(e.error_rate * 100, 1)}% 5xx, p50 ${fixed(e.p50_ms, 1)} ms, p99 ${fixed(e.p99_ms, 1)} ms${e.mtls ? ", mutual TLS" : ", plaintext"}`));
    g.append(el("svg:text", { x: x2 - 14, y: y2 - 6, "text-anchor": "end" }, `${fixed(e.rps, 1)}/s`));
    svg.append(g);
  }
  for (const [id, p] of pos) {
    const n = byId.get(id) || { id, kind: "outside", service: "", namespace: "" };
    const g = el("svg:g", { class: `node ${n.kind}`, "data-id": id, transform: `translate(${p.x} ${p.y})` });
    g.append(el("svg:rect", { width: p.w, height: p.h }));
    g.append(el("svg:text", { x: 10, y: 19 }, id));
    g.append(el("svg:text", { x: 10, y: 36, class: "sub" }, n.kind === "outside" ? "outside the mesh" : `${n.service}.${n.namespace}${n.tenant && n.tenant !== "default" ? " · " + n.tenant : ""}`));
    svg.append(g);
  }
}

function expiry(seconds) {
  if (!seconds) return "none yet";
  const left = seconds - Date.now() / 1000;
  if (left <= 0) return "expired";
  const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60);
  return `in ${h}h ${m}m`;
}

function renderTables(state) {
  const rows = state.nodes.map((n) => {
    const tr = el("tr", { "data-id": n.id });
    tr.append(el("td", {}, n.id), el("td", {}, `${n.tenant} (${n.trust_domain})`), el("td", {}, n.identity),
      state.certificates
        ? el("td", { class: n.cert_expiry ? "" : "bad" }, expiry(n.cert_expiry))
        : el("td", { class: "muted" }, "–"),
      el("td", { class: n.xds_connected ? "ok" : "bad" }, n.xds_connected ? "connected" : "not connected"),
      el("td", { class: n.updates_rejected > 0 ? "bad" : "" }, `${n.updates_accepted} / ${n.updates_rejected}`));
    return tr;
  });
  $("#workloads tbody").replaceChildren(...rows);
  const reqs = state.requests.map((r) => {
    const tr = el("tr");
    tr.append(el("td", {}, r.request), el("td", { class: "num" }, fixed(r.rps, 1)), el("td", { class: "num" }, r.ok),
      el("td", { class: "num" }, r.client_errors), el("td", { class: r.server_errors ? "num bad" : "num" }, r.server_errors),
      el("td", { class: "num" }, fixed(r.p50_ms, 1)), el("td", { class: "num" }, fixed(r.p99_ms, 1)), el("td", {}, r.served_by));
    return tr;
  });
  $("#requests tbody").replaceChildren(...reqs);
  const edges = [...state.edges].sort((a, b) => (a.source + a.destination).localeCompare(b.source + b.destination)).map((e) => {
    const tr = el("tr", { "data-source": e.source, "data-destination": e.destination });
    tr.append(el("td", {}, e.source), el("td", {}, e.destination), el("td", { class: "num" }, fixed(e.rps, 1)),
      el("td", { class: e.error_rate > 0.05 ? "num bad" : "num" }, `${fixed(e.error_rate * 100, 1)}%`),
      el("td", { class: "num" }, fixed(e.p50_ms, 1)), el("td", { class: "num" }, fixed(e.p99_ms, 1)),
      el("td", { class: e.mtls ? "ok" : "bad" }, e.mtls ? "mutual TLS" : "plaintext"), el("td", { class: "num" }, fixed(e.total, 0)));
    return tr;
  });
  $("#edges tbody").replaceChildren(...edges);
  const c = state.config;
  const box = $("#config");
  box.replaceChildren(el("div", {}, `inputs: generation ${c.generation} · ${c.refused.length} refused · ${c.warnings} warnings · pushes rejected by proxies now: ${c.rejected_by_proxies.length}`));
  for (const [list, id] of [[c.refused, "refused"], [c.rejected_by_proxies, "rejected"]]) {
    if (!list.length) continue;
    const ul = el("ul", { class: "refused", id });
    for (const r of list) ul.append(el("li", { class: "bad" }, r));
    box.append(ul);
  }
}

function render(state) {
  if (!state || !state.nodes) return;
  $("#title").textContent = `${state.title} — up ${state.uptime_s}s`;
  renderGraph(state);
  renderTables(state);
  document.body.dataset.updated = String(Date.now());
}

fetch("/api/state").then((r) => r.json()).then(render).catch(() => {});
const events = new EventSource("/api/events");
events.onopen = () => { $("#live").textContent = "live"; $("#live").classList.remove("off"); };
events.onerror = () => { $("#live").textContent = "offline"; $("#live").classList.add("off"); };
events.onmessage = (e) => render(JSON.parse(e.data));
