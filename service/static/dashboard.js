// gigdispatch manager dashboard: the page of `gigdispatch dashboard` (protocol v1, docs/dashboard.md).
//
// Plain ES module, no build step. Everything comes from the page's own origin: the API under /v1 (with the
// bearer token from `#token=...`), uPlot from /static/vendor/uplot. One requestAnimationFrame loop draws the
// newest frame of each run; frames that arrive faster than the screen refreshes only update the state.
//
// Exposed for tests and scripting (window.gd): pick(kind, id, run?), project(x, y, run?), seek(minute),
// fit(), unpick(); and on <body> after each draw: data-frame, data-frame1, data-markers, data-markers1,
// data-kpi-points, data-run-count, data-mode, data-done, data-draw-ms.

"use strict";

// ------------------------------------------------------------------------------------------ constants
const STATUS_COLOURS = {
  idle: "#5aa9ff",
  to_pickup: "#c77dff",
  delivering: "#2ed3c6",
  repositioning: "#a9b8c9",
  off_shift: "#5b6675",
  suspended: "#ff6fb5",
  applicant: "#efe08a",
  access_denied: "#b3475f",
};
const SLA_COLOURS = { on_track: "#3fcf6e", at_risk: "#f5b83d", late: "#f0524f" };
const SLA_LABELS = { on_track: "on track", at_risk: "at risk", late: "late" };
const OFF_SHIFT = "off_shift";
const PICK_RADIUS_PX = 8;
const TABLE_ROWS = 200;
const TABLE_REFRESH_MS = 1000;
const CHART_REFRESH_MS = 250;
const DETAILS_REFRESH_MS = 1000;
const REPLAY_SAMPLE_S = 300; // replay KPI chart: one point every 5 simulated minutes
const REPLAY_TICK_MS = 150; // replay playback: a frame at most every 150 ms
const STREAM_IDLE_MS = 60000; // no byte (not even a keep-alive comment) for this long: reconnect
const RUN_TAGS = ["A", "B"];
const MAP_BG = "#0f151d";
const ROAD = "#2c3a4c";

const KPI_TILES = [
  { key: "on_time_rate", label: "On time", fmt: (v) => pct(v) },
  { key: "click_to_door_min", label: "Click-to-door", fmt: (v) => (v == null ? "—" : `${v.toFixed(1)} min`) },
  { key: "acceptance_rate", label: "Acceptance", fmt: (v) => pct(v) },
  { key: "utilisation", label: "Utilisation", fmt: (v) => pct(v) },
  { key: "margin_eur", label: "Margin", fmt: (v) => eur(v, 0) },
  { key: "surge_mean", label: "Mean surge", fmt: (v) => (v == null ? "—" : `×${v.toFixed(2)}`) },
  { key: "cancelled", label: "Cancelled", fmt: (v) => (v == null ? "—" : String(Math.round(v))) },
  { key: "_active", label: "Active drivers", fmt: (v) => (v == null ? "—" : String(v)) },
  { key: "_open", label: "Open orders", fmt: (v) => (v == null ? "—" : String(v)) },
];

const CHARTS = {
  rates: {
    el: "chart-rates",
    series: [
      { key: "on_time_rate", label: "On time", colour: "#3fcf6e", scale: "rate", fmt: (v) => pct(v) },
      { key: "acceptance_rate", label: "Acceptance", colour: "#5aa9ff", scale: "rate", fmt: (v) => pct(v) },
      { key: "utilisation", label: "Utilisation", colour: "#c77dff", scale: "rate", fmt: (v) => pct(v) },
    ],
  },
  units: {
    el: "chart-units",
    series: [
      { key: "click_to_door_min", label: "Click-to-door", colour: "#f5b83d", scale: "min", fmt: (v) => `${v.toFixed(1)} min` },
      { key: "margin_eur", label: "Margin", colour: "#2ed3c6", scale: "eur", fmt: (v) => eur(v, 0) },
    ],
  },
  pressure: {
    el: "chart-pressure",
    series: [
      { key: "surge_mean", label: "Mean surge", colour: "#ff8a3d", scale: "surge", fmt: (v) => `×${v.toFixed(2)}` },
      { key: "cancelled", label: "Cancelled", colour: "#f0524f", scale: "count", fmt: (v) => `${v}` },
    ],
  },
};

const TABLE_COLS = [
  { key: "id", label: "Driver", cls: "l", num: true },
  { key: "status", label: "Status", cls: "l" },
  { key: "acceptance", label: "Acc.", num: true },
  { key: "on_time", label: "On time", num: true },
  { key: "rating", label: "Rating", num: true },
  { key: "service_min", label: "Svc", num: true },
  { key: "performance", label: "Perf", num: true },
  { key: "earnings", label: "Earned", num: true },
  { key: "deliveries", label: "Deliv", num: true },
];

// -------------------------------------------------------------------------------------------- state
const S = {
  token: null,
  mode: null, // "live" | "replay"
  runs: [], // {r, info, city, frame, table, map, kpiLastT, statusIdx{name:code}}
  view: { cx: 0, cy: 0, k: 1, auto: true, kFit: 1 },
  zoneMode: "surge",
  showOff: false,
  pick: null, // {kind, id, run, data, seq, error, fetchedAt}
  kpi: { x: [], y: [] }, // y[run][seriesKey] = []
  live: { paused: false, speed: 60, done: false, lastDetails: 0 },
  replay: { t: 0, tMin: 0, tMax: 0, playing: false, speed: 300 },
  table: { run: 0, key: "deliveries", dir: -1, dirty: true, last: 0 },
  charts: {},
  chartsDirty: false,
  chartsLast: 0,
  dirty: false,
  drawWaiters: [],
  later: null,
  tiles: null,
};
let pickSeq = 0;

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// ---------------------------------------------------------------------------------------- formatting
const EUR2 = new Intl.NumberFormat("en-GB", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const EUR0 = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 });

function pct(v) {
  return v == null || !Number.isFinite(v) ? "—" : `${(v * 100).toFixed(1)}%`;
}
function pct0(v) {
  return v == null || !Number.isFinite(v) ? "—" : `${Math.round(v * 100)}%`;
}
function eur(v, digits = 2) {
  if (v == null || !Number.isFinite(v)) return "—";
  return `€${(digits ? EUR2 : EUR0).format(v)}`;
}
function pad2(n) {
  return String(n).padStart(2, "0");
}
/** Seconds since midnight as HH:MM (past midnight: 24:10, like the server's clock). */
function hhmm(s) {
  if (s == null || !Number.isFinite(s)) return "—";
  const m = Math.floor(s / 60);
  return `${pad2(Math.floor(m / 60))}:${pad2(m % 60)}`;
}
/** Seconds since midnight as HH:MM:SS of the clock (rounded to the second). */
function hhmmss(s) {
  if (s == null || !Number.isFinite(s)) return "—";
  const t = Math.round(s);
  return `${pad2(Math.floor(t / 3600) % 24)}:${pad2(Math.floor((t % 3600) / 60))}:${pad2(t % 60)}`;
}
function esc(v) {
  return String(v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function label(name) {
  return String(name).replace(/_/g, " ");
}

// ----------------------------------------------------------------------------------------------- API
class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

function readToken() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const t = params.get("token");
  S.token = t && t.trim() ? t.trim() : null;
}

function authHeaders(extra = {}) {
  const h = { ...extra };
  if (S.token) h.Authorization = `Bearer ${S.token}`;
  return h;
}

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: authHeaders(opts.headers || {}), cache: "no-store" });
  if (!res.ok) {
    let detail = res.statusText;
    try {
      const body = await res.json();
      if (body && body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch {
      /* not JSON: keep the status text */
    }
    throw new ApiError(res.status, detail);
  }
  return res.json();
}

function postJSON(path, body) {
  return api(path, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
}

function setConn(text, bad = false) {
  const el = $("conn");
  el.textContent = text;
  el.classList.toggle("bad", bad);
}

function explain(err) {
  if (err instanceof ApiError) {
    if (err.status === 401 || err.status === 403)
      return `API refused the token (${err.status}): open the address the server printed, with #token=…`;
    return `API error ${err.status}: ${err.detail}`;
  }
  return `cannot reach the server (${err && err.message ? err.message : err})`;
}

// ------------------------------------------------------------------------------------ SSE over fetch
/** Reads a text/event-stream body, calling onEvent(type, data) per event; comments (':') are skipped.
 *  onBytes() is called for every chunk (keep-alives included) so a watchdog can tell a dead stream. */
async function readSSE(body, onEvent, onBytes) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let type = "";
  let data = [];
  const eol = /\r\n|\r|\n/g;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    buf += value;
    let start = 0;
    eol.lastIndex = 0;
    let m;
    while ((m = eol.exec(buf)) !== null) {
      if (m[0] === "\r" && m.index === buf.length - 1) break; // maybe the first half of \r\n: wait
      const line = buf.slice(start, m.index);
      start = eol.lastIndex;
      if (line === "") {
        if (data.length) onEvent(type || "message", data.join("\n"));
        type = "";
        data = [];
      } else if (line[0] !== ":") {
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        let val = c < 0 ? "" : line.slice(c + 1);
        if (val[0] === " ") val = val.slice(1);
        if (field === "event") type = val;
        else if (field === "data") data.push(val);
      }
    }
    buf = buf.slice(start);
  }
}

// --------------------------------------------------------------------------------------------- map
/** One run's map: a DPR-aware canvas, its roads cached in an offscreen canvas for the current view. */
class MapView {
  constructor(run, canvas) {
    this.run = run;
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.roads = document.createElement("canvas");
    this.roadsKey = "";
    this.W = 1;
    this.H = 1;
    this.dpr = 1;
    this.markers = 0;
    this.resize();
    this.bindPointer();
  }

  resize() {
    const wrap = this.canvas.parentElement;
    const W = Math.max(1, wrap.clientWidth);
    const H = Math.max(1, wrap.clientHeight);
    const dpr = window.devicePixelRatio || 1;
    if (W === this.W && H === this.H && dpr === this.dpr) return false;
    this.W = W;
    this.H = H;
    this.dpr = dpr;
    this.canvas.width = Math.round(W * dpr);
    this.canvas.height = Math.round(H * dpr);
    this.roads.width = this.canvas.width;
    this.roads.height = this.canvas.height;
    this.roadsKey = "";
    return true;
  }

  // world (metres, y up) -> CSS pixels of the canvas
  tx() {
    const v = S.view;
    return { a: v.k, bx: this.W / 2 - v.cx * v.k, by: this.H / 2 + v.cy * v.k };
  }
  project(x, y) {
    const { a, bx, by } = this.tx();
    return [x * a + bx, -y * a + by];
  }
  unproject(px, py) {
    const { a, bx, by } = this.tx();
    return [(px - bx) / a, -(py - by) / a];
  }

  renderRoads() {
    const city = this.run.city;
    const c = this.roads.getContext("2d");
    c.setTransform(1, 0, 0, 1, 0, 0);
    c.clearRect(0, 0, this.roads.width, this.roads.height);
    c.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    const { a, bx, by } = this.tx();
    const nodes = city.nodes;
    if (city.edges && city.edges.length) {
      c.strokeStyle = ROAD;
      c.lineWidth = Math.min(2.2, Math.max(1, (S.view.k / S.view.kFit) ** 0.5));
      c.lineCap = "round";
      c.beginPath();
      for (const [i, j] of city.edges) {
        const p = nodes[i];
        const q = nodes[j];
        c.moveTo(p[0] * a + bx, -p[1] * a + by);
        c.lineTo(q[0] * a + bx, -q[1] * a + by);
      }
      c.stroke();
    } else {
      // planar points (MDRP): the places, faintly
      c.fillStyle = ROAD;
      c.beginPath();
      for (const p of nodes) c.rect(p[0] * a + bx - 0.75, -p[1] * a + by - 0.75, 1.5, 1.5);
      c.fill();
    }
    this.roadsKey = this.viewKey();
  }

  viewKey() {
    const v = S.view;
    return `${v.cx}|${v.cy}|${v.k}|${this.W}|${this.H}|${this.dpr}`;
  }

  markerRadius() {
    return Math.min(7, Math.max(2.6, 2.6 * (S.view.k / S.view.kFit) ** 0.45));
  }

  /** Draws the run's current frame; returns the number of driver markers drawn. */
  draw() {
    const ctx = this.ctx;
    const run = this.run;
    const fr = run.frame;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = MAP_BG;
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    if (fr) this.drawZones(fr);
    if (this.roadsKey !== this.viewKey()) this.renderRoads();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(this.roads, 0, 0);
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    if (!fr) return 0;
    this.drawPickUnder(fr);
    this.drawOrders(fr);
    const n = this.drawDrivers(fr);
    this.drawPickOver(fr);
    return n;
  }

  drawZones(fr) {
    const zones = this.run.city.zones || [];
    if (S.zoneMode === "none" || !zones.length || !fr.zones) return;
    const ctx = this.ctx;
    const { a, bx, by } = this.tx();
    const vals = S.zoneMode === "surge" ? fr.zones.surge : fr.zones.gap;
    if (!vals) return;
    let gmax = 3;
    if (S.zoneMode === "gap") for (const g of vals) gmax = Math.max(gmax, Math.abs(g));
    ctx.font = "600 11px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    for (let z = 0; z < zones.length; z++) {
      const [x0, y0, x1, y1] = zones[z];
      const sx = x0 * a + bx;
      const sy = -y1 * a + by;
      const w = (x1 - x0) * a;
      const h = (y1 - y0) * a;
      const v = vals[z];
      let fill = null;
      let text = null;
      if (S.zoneMode === "surge") {
        const s = Math.min(1, Math.max(0, (v - 1) / 1.0));
        if (s > 0.001) fill = `rgba(255,138,61,${(0.07 + 0.26 * s).toFixed(3)})`;
        if (v > 1.005) text = `×${v.toFixed(2)}`;
      } else {
        const s = Math.min(1, Math.abs(v) / gmax);
        if (v > 0) fill = `rgba(240,82,79,${(0.07 + 0.28 * s).toFixed(3)})`;
        else if (v < 0) fill = `rgba(79,157,255,${(0.06 + 0.24 * s).toFixed(3)})`;
        if (v !== 0) text = v > 0 ? `+${v}` : `${v}`;
      }
      if (fill) {
        ctx.fillStyle = fill;
        ctx.fillRect(sx, sy, w, h);
      }
      ctx.strokeStyle = "rgba(140,160,190,0.10)";
      ctx.lineWidth = 1;
      ctx.strokeRect(sx + 0.5, sy + 0.5, w - 1, h - 1);
      if (text && w > 46 && h > 24) {
        ctx.fillStyle = "rgba(230,237,243,0.55)";
        ctx.fillText(text, sx + w / 2, sy + 12);
      }
    }
  }

  drawOrders(fr) {
    const o = fr.orders;
    if (!o || !o.id.length) return;
    const ctx = this.ctx;
    const { a, bx, by } = this.tx();
    const city = this.run.city;
    const slaNames = city.sla_names;
    const express = city.level_names.indexOf("express");
    const picked = city.order_status_names.indexOf("picked");
    const s = Math.max(4, this.markerRadius() * 1.5);
    const paths = slaNames.map(() => [new Path2D(), new Path2D()]); // [waiting, on board]
    const outline = new Path2D();
    for (let k = 0; k < o.id.length; k++) {
      const x = o.px[k] * a + bx;
      const y = -o.py[k] * a + by;
      const p = paths[o.sla[k]] ? paths[o.sla[k]][o.status[k] === picked ? 1 : 0] : null;
      if (!p) continue;
      p.moveTo(x, y - s);
      p.lineTo(x + s * 0.92, y + s * 0.62);
      p.lineTo(x - s * 0.92, y + s * 0.62);
      p.closePath();
      if (o.level[k] === express) {
        outline.moveTo(x, y - s - 1.6);
        outline.lineTo(x + s * 0.92 + 1.6, y + s * 0.62 + 0.9);
        outline.lineTo(x - s * 0.92 - 1.6, y + s * 0.62 + 0.9);
        outline.closePath();
      }
    }
    ctx.lineWidth = 0.8;
    ctx.strokeStyle = "rgba(0,0,0,0.6)";
    for (let q = 0; q < slaNames.length; q++) {
      const col = SLA_COLOURS[slaNames[q]] || "#ccc";
      ctx.fillStyle = col;
      ctx.globalAlpha = 1;
      ctx.fill(paths[q][0]);
      ctx.stroke(paths[q][0]);
      ctx.globalAlpha = 0.4;
      ctx.fill(paths[q][1]);
    }
    ctx.globalAlpha = 1;
    ctx.lineWidth = 1.3;
    ctx.strokeStyle = "#ffffff";
    ctx.stroke(outline);
  }

  drawDrivers(fr) {
    const d = fr.drivers;
    const city = this.run.city;
    const ctx = this.ctx;
    const { a, bx, by } = this.tx();
    const names = city.status_names;
    const off = names.indexOf(OFF_SHIFT);
    const owned = city.owned;
    const r = this.markerRadius();
    const sq = r * 0.9;
    const paths = names.map(() => new Path2D());
    const n = d.x.length;
    let drawn = 0;
    const counts = new Array(names.length).fill(0);
    for (let i = 0; i < n; i++) {
      const st = d.status[i];
      counts[st] = (counts[st] || 0) + 1;
      if (st === off && !S.showOff) continue;
      const p = paths[st];
      if (!p) continue;
      const x = d.x[i] * a + bx;
      const y = -d.y[i] * a + by;
      if (owned[i]) p.rect(x - sq, y - sq, 2 * sq, 2 * sq);
      else {
        p.moveTo(x + r, y);
        p.arc(x, y, r, 0, 2 * Math.PI);
      }
      drawn++;
    }
    ctx.lineWidth = 0.7;
    ctx.strokeStyle = "rgba(0,0,0,0.65)";
    // off shift first (underneath), then the others in code order
    const order = names.map((_, k) => k).sort((p, q) => (p === off ? -1 : q === off ? 1 : p - q));
    for (const k of order) {
      ctx.fillStyle = STATUS_COLOURS[names[k]] || "#ddd";
      ctx.fill(paths[k]);
      ctx.stroke(paths[k]);
    }
    this.run.statusCounts = counts;
    return drawn;
  }

  // the picked object's highlight: route lines under the markers, rings and labels over them
  pickGeometry(fr) {
    const pk = S.pick;
    if (!pk || pk.run !== this.run.r) return null;
    const d = fr.drivers;
    const o = fr.orders;
    if (pk.kind === "driver") {
      if (pk.id < 0 || pk.id >= d.x.length) return null;
      const here = [d.x[pk.id], d.y[pk.id]];
      let stops = [];
      if (pk.data && Array.isArray(pk.data.route)) {
        stops = pk.data.route.map((s) => ({ x: s.x, y: s.y, kind: s.kind, eta: s.eta }));
      } else if (S.mode === "replay") {
        const pick = [];
        const drop = [];
        const pickedCode = this.run.city.order_status_names.indexOf("picked");
        for (let k = 0; k < o.id.length; k++) {
          if (o.driver[k] !== pk.id) continue;
          if (o.status[k] !== pickedCode) pick.push({ x: o.px[k], y: o.py[k], kind: "pickup", eta: null });
          drop.push({ x: o.dx[k], y: o.dy[k], kind: "dropoff", eta: null });
        }
        stops = pick.concat(drop);
      }
      return { kind: "driver", here, stops };
    }
    const k = o.id.indexOf(pk.id);
    let pickup = null;
    let dropoff = null;
    let driver = null;
    let onBoard = false;
    if (k >= 0) {
      pickup = [o.px[k], o.py[k]];
      dropoff = [o.dx[k], o.dy[k]];
      driver = o.driver[k] >= 0 ? o.driver[k] : null;
      onBoard = o.status[k] === this.run.city.order_status_names.indexOf("picked");
    } else if (pk.data && pk.data.pickup) {
      pickup = [pk.data.pickup.x, pk.data.pickup.y];
      dropoff = [pk.data.dropoff.x, pk.data.dropoff.y];
    }
    if (!pickup) return null;
    const dpos = driver != null && driver < d.x.length ? [d.x[driver], d.y[driver]] : null;
    return { kind: "order", pickup, dropoff, dpos, onBoard };
  }

  drawPickUnder(fr) {
    const g = this.pickGeometry(fr);
    if (!g) return;
    const ctx = this.ctx;
    ctx.save();
    ctx.lineJoin = "round";
    if (g.kind === "driver" && g.stops.length) {
      ctx.strokeStyle = "rgba(255,255,255,0.85)";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(...this.project(...g.here));
      for (const s of g.stops) ctx.lineTo(...this.project(s.x, s.y));
      ctx.stroke();
    } else if (g.kind === "order") {
      ctx.setLineDash([5, 4]);
      ctx.strokeStyle = "rgba(255,255,255,0.8)";
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      if (g.dpos && !g.onBoard) {
        ctx.moveTo(...this.project(...g.dpos));
        ctx.lineTo(...this.project(...g.pickup));
      } else if (g.dpos) {
        ctx.moveTo(...this.project(...g.dpos));
      } else {
        ctx.moveTo(...this.project(...g.pickup));
      }
      ctx.lineTo(...this.project(...g.dropoff));
      ctx.stroke();
    }
    ctx.restore();
  }

  drawPickOver(fr) {
    const g = this.pickGeometry(fr);
    if (!g) return;
    const ctx = this.ctx;
    const r = this.markerRadius();
    ctx.save();
    ctx.font = "600 11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    const ring = (x, y, rad) => {
      ctx.beginPath();
      ctx.arc(x, y, rad, 0, 2 * Math.PI);
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2;
      ctx.stroke();
    };
    const tag = (x, y, text, gap = 10) => {
      const w = ctx.measureText(text).width + 10;
      ctx.fillStyle = "rgba(12,17,23,0.9)";
      ctx.strokeStyle = "rgba(230,237,243,0.35)";
      ctx.lineWidth = 1;
      ctx.fillRect(x + gap, y - 9, w, 18);
      ctx.strokeRect(x + gap + 0.5, y - 8.5, w - 1, 17);
      ctx.fillStyle = "#e6edf3";
      ctx.fillText(text, x + gap + 5, y + 0.5);
    };
    const stopMark = (x, y, kind) => {
      ctx.beginPath();
      if (kind === "pickup") ctx.rect(x - 4.5, y - 4.5, 9, 9);
      else {
        ctx.moveTo(x, y - 6);
        ctx.lineTo(x + 6, y);
        ctx.lineTo(x, y + 6);
        ctx.lineTo(x - 6, y);
        ctx.closePath();
      }
      ctx.fillStyle = MAP_BG;
      ctx.fill();
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 1.8;
      ctx.stroke();
    };
    if (g.kind === "driver") {
      g.stops.forEach((s, n) => {
        const [x, y] = this.project(s.x, s.y);
        stopMark(x, y, s.kind);
        const what = s.kind === "pickup" ? "pick-up" : "drop-off";
        tag(x, y, s.eta != null ? `${n + 1} · ${what} ${hhmm(s.eta)}` : `${what}`);
      });
      const [x, y] = this.project(...g.here);
      ring(x, y, r + 4);
    } else {
      const [px, py] = this.project(...g.pickup);
      ring(px, py, Math.max(8, r * 2.2));
      tag(px, py, "pick-up", Math.max(8, r * 2.2) + 6);
      const [dx, dy] = this.project(...g.dropoff);
      stopMark(dx, dy, "dropoff");
      tag(dx, dy, "drop-off");
      if (g.dpos) {
        const [x, y] = this.project(...g.dpos);
        ring(x, y, r + 4);
      }
    }
    ctx.restore();
  }

  /** The nearest drawn driver or order within PICK_RADIUS_PX of (px, py) CSS pixels, or null. */
  hit(px, py) {
    const fr = this.run.frame;
    if (!fr) return null;
    const { a, bx, by } = this.tx();
    let best = null;
    let bestD = PICK_RADIUS_PX * PICK_RADIUS_PX;
    const o = fr.orders;
    for (let k = 0; k < o.id.length; k++) {
      const dx = o.px[k] * a + bx - px;
      const dy = -o.py[k] * a + by - py;
      const dd = dx * dx + dy * dy;
      if (dd <= bestD) {
        bestD = dd;
        best = { kind: "order", id: o.id[k] };
      }
    }
    const d = fr.drivers;
    const off = this.run.city.status_names.indexOf(OFF_SHIFT);
    for (let i = 0; i < d.x.length; i++) {
      if (d.status[i] === off && !S.showOff) continue;
      const dx = d.x[i] * a + bx - px;
      const dy = -d.y[i] * a + by - py;
      const dd = dx * dx + dy * dy;
      if (dd < bestD) {
        bestD = dd;
        best = { kind: "driver", id: i };
      }
    }
    return best;
  }

  bindPointer() {
    const cv = this.canvas;
    let down = null;
    cv.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      down = { x: e.clientX, y: e.clientY, cx: S.view.cx, cy: S.view.cy, moved: false };
      cv.setPointerCapture(e.pointerId);
    });
    cv.addEventListener("pointermove", (e) => {
      if (!down) return;
      const dx = e.clientX - down.x;
      const dy = e.clientY - down.y;
      if (!down.moved && dx * dx + dy * dy < 16) return;
      down.moved = true;
      cv.classList.add("dragging");
      S.view.cx = down.cx - dx / S.view.k;
      S.view.cy = down.cy + dy / S.view.k;
      S.view.auto = false;
      scheduleDraw();
    });
    const end = (e) => {
      if (!down) return;
      const wasClick = !down.moved && e.type === "pointerup";
      down = null;
      cv.classList.remove("dragging");
      if (wasClick) {
        const rect = cv.getBoundingClientRect();
        const h = this.hit(e.clientX - rect.left, e.clientY - rect.top);
        if (h) pick(h.kind, h.id, this.run.r);
      }
    };
    cv.addEventListener("pointerup", end);
    cv.addEventListener("pointercancel", end);
    cv.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        const rect = cv.getBoundingClientRect();
        const px = e.clientX - rect.left;
        const py = e.clientY - rect.top;
        const [wx, wy] = this.unproject(px, py);
        const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1;
        const f = Math.exp(-e.deltaY * unit * 0.0015);
        const v = S.view;
        v.k = Math.min(v.kFit * 40, Math.max(v.kFit * 0.5, v.k * f));
        // keep the world point under the cursor where it is
        v.cx = wx - (px - this.W / 2) / v.k;
        v.cy = wy + (py - this.H / 2) / v.k;
        v.auto = false;
        scheduleDraw();
      },
      { passive: false },
    );
  }
}

function worldBox() {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (const run of S.runs) {
    const b = run.city.bbox;
    x0 = Math.min(x0, b[0]);
    y0 = Math.min(y0, b[1]);
    x1 = Math.max(x1, b[2]);
    y1 = Math.max(y1, b[3]);
    for (const z of run.city.zones || []) {
      x0 = Math.min(x0, z[0]);
      y0 = Math.min(y0, z[1]);
      x1 = Math.max(x1, z[2]);
      y1 = Math.max(y1, z[3]);
    }
  }
  if (!Number.isFinite(x0)) return [0, 0, 1, 1];
  return [x0, y0, Math.max(x1, x0 + 1), Math.max(y1, y0 + 1)];
}

function fitView() {
  const [x0, y0, x1, y1] = worldBox();
  let k = Infinity;
  for (const run of S.runs) {
    if (!run.map) continue;
    k = Math.min(k, (run.map.W - 24) / (x1 - x0), (run.map.H - 24) / (y1 - y0));
  }
  if (!Number.isFinite(k) || k <= 0) k = 1;
  Object.assign(S.view, { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, k, kFit: k, auto: true });
  scheduleDraw();
}

// ------------------------------------------------------------------------------------------- drawing
function scheduleDraw() {
  if (S.dirty) return;
  S.dirty = true;
  requestAnimationFrame(drawAll);
}

/** A promise resolved after the next draw. */
function drawn() {
  return new Promise((res) => {
    S.drawWaiters.push(res);
    scheduleDraw();
  });
}

function drawAll() {
  S.dirty = false;
  const t0 = performance.now();
  let resized = false;
  for (const run of S.runs) if (run.map && run.map.resize()) resized = true;
  if (resized && S.view.auto) fitView();
  const body = document.body.dataset;
  S.runs.forEach((run, r) => {
    if (!run.map) return;
    const n = run.map.draw();
    if (run.frame) {
      body[r === 0 ? "frame" : `frame${r}`] = String(run.frame.i);
      body[r === 0 ? "markers" : `markers${r}`] = String(n);
    }
    updatePaneHead(run, n);
  });
  const drawMs = performance.now() - t0;
  body.drawMs = drawMs.toFixed(2);
  body.runCount = String(S.runs.length);
  body.mode = S.mode || "";
  const done = S.runs.length > 0 && S.runs.every((run) => run.frame && run.frame.done);
  body.done = done ? "1" : "0";
  updateHeader();
  updateTiles();
  updateLedger();
  updateLegendCounts();
  const now = performance.now();
  if (S.chartsDirty && now - S.chartsLast >= CHART_REFRESH_MS) updateCharts();
  if (S.table.dirty && now - S.table.last >= TABLE_REFRESH_MS) renderTable();
  if ((S.chartsDirty || S.table.dirty) && !S.later) {
    // throttled work still due: come back for it even if no new frame arrives (paused, replay at rest)
    S.later = setTimeout(() => {
      S.later = null;
      scheduleDraw();
    }, CHART_REFRESH_MS);
  }
  const waiters = S.drawWaiters;
  S.drawWaiters = [];
  for (const w of waiters) w();
}

function updatePaneHead(run, markers) {
  const fr = run.frame;
  const stats = run.pane.querySelector("[data-role=stats]");
  const banner = run.pane.querySelector("[data-role=banner]");
  if (!fr) return;
  const multi = S.runs.length > 1;
  stats.textContent = multi
    ? `${fr.clock} · ${markers} drivers · ${fr.orders.id.length} orders`
    : `${markers} drivers shown · ${fr.orders.id.length} open orders`;
  banner.hidden = !fr.done;
  banner.textContent = `Day over · ${fr.clock}`;
}

function updateHeader() {
  const first = S.runs[0] && S.runs[0].frame;
  if (first) $("clock").textContent = first.clock;
  const pill = $("mode-pill");
  const done = document.body.dataset.done === "1";
  let text;
  let cls;
  if (S.mode === "live") {
    if (done) [text, cls] = ["DAY OVER", "over"];
    else if (S.live.paused) [text, cls] = ["PAUSED", "paused"];
    else [text, cls] = ["LIVE", "live"];
  } else if (S.mode === "replay") {
    [text, cls] = done ? ["REPLAY · DAY OVER", "over"] : [S.replay.playing ? "REPLAY ▶" : "REPLAY", "replay"];
  } else [text, cls] = ["…", ""];
  if (pill.textContent !== text) pill.textContent = text;
  pill.className = `pill ${cls}`;
  if (S.mode === "live") {
    $("play").disabled = done;
    if (done) $("speed").disabled = true;
  }
}

// -------------------------------------------------------------------------------------- KPI tiles
function buildTiles() {
  const box = $("kpis");
  box.textContent = "";
  if (S.runs.length > 1) {
    // two runs: a compact comparison table, two KPIs per row (KPI | A | B | KPI | A | B)
    const tbl = document.createElement("table");
    tbl.className = "kpi-table";
    let head = "<thead><tr>";
    for (let c = 0; c < 2; c++) head += `<th scope="col">KPI</th><th scope="col">A</th><th scope="col">B</th>`;
    tbl.innerHTML = `${head}</tr></thead><tbody></tbody>`;
    const tbody = tbl.querySelector("tbody");
    box.classList.add("kpis-multi");
    box.appendChild(tbl);
    S.tiles = [];
    let tr = null;
    KPI_TILES.forEach((t, k) => {
      if (k % 2 === 0) {
        tr = document.createElement("tr");
        tbody.appendChild(tr);
      }
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = t.label;
      tr.appendChild(th);
      const spans = S.runs.map((run, r) => {
        const td = document.createElement("td");
        td.dataset.run = String(r);
        td.dataset.kpi = t.key;
        tr.appendChild(td);
        return td;
      });
      S.tiles.push({ def: t, spans });
    });
    return;
  }
  S.tiles = KPI_TILES.map((t) => {
    const el = document.createElement("div");
    el.className = "kpi";
    const lab = document.createElement("div");
    lab.className = "k-label";
    lab.textContent = t.label;
    const v = document.createElement("div");
    v.className = "k-val";
    v.dataset.run = "0";
    v.dataset.kpi = t.key;
    el.append(lab, v);
    box.appendChild(el);
    return { def: t, spans: [v] };
  });
}

function updateTiles() {
  if (!S.tiles) return;
  for (const { def, spans } of S.tiles) {
    spans.forEach((span, r) => {
      const fr = S.runs[r].frame;
      let v = null;
      if (fr) {
        if (def.key === "_active") v = fr.active;
        else if (def.key === "_open") v = fr.orders.id.length;
        else v = fr.kpi ? fr.kpi[def.key] : null;
      }
      const text = def.fmt(v);
      if (span.textContent !== text) span.textContent = text;
    });
  }
}

function updateLedger() {
  const tbl = $("ledger");
  const multi = S.runs.length > 1;
  let html = `<thead><tr><th scope="col">${multi ? "Run" : ""}</th><th scope="col">Fees</th><th scope="col">Payouts</th><th scope="col">Refunds</th><th scope="col">Margin</th><th scope="col">Balanced</th></tr></thead><tbody>`;
  S.runs.forEach((run, r) => {
    const l = run.frame && run.frame.ledger;
    const bal = l ? (l.balanced ? `<span class="bal-ok">✓ yes</span>` : `<span class="bal-bad">✗ no</span>`) : "—";
    html += `<tr><th scope="row">${multi ? RUN_TAGS[r] : "Total"}</th><td>${eur(l && l.fees)}</td><td>${eur(l && l.payouts)}</td><td>${eur(
      l && l.refunds,
    )}</td><td>${eur(l && l.margin)}</td><td data-field="balanced">${bal}</td></tr>`;
  });
  html += "</tbody>";
  if (tbl.innerHTML !== html) tbl.innerHTML = html;
}

// ------------------------------------------------------------------------------------------ legend
function shapeSvg(shape, fill, stroke = "rgba(0,0,0,.6)", alpha = 1) {
  const common = `fill="${fill}" stroke="${stroke}" stroke-width="1" opacity="${alpha}"`;
  if (shape === "circle") return `<svg width="12" height="12" aria-hidden="true"><circle cx="6" cy="6" r="4.2" ${common}/></svg>`;
  if (shape === "square") return `<svg width="12" height="12" aria-hidden="true"><rect x="2" y="2" width="8" height="8" ${common}/></svg>`;
  return `<svg width="14" height="12" aria-hidden="true"><polygon points="7,1.5 12.5,10.5 1.5,10.5" ${common}/></svg>`;
}

function buildLegend() {
  const city = S.runs[0].city;
  const items = city.status_names
    .map(
      (name, k) =>
        `<span class="item" data-status="${k}"${name === OFF_SHIFT ? " data-off" : ""}>${shapeSvg("circle", STATUS_COLOURS[name] || "#ddd")}${esc(
          label(name),
        )} <b class="cnt"></b></span>`,
    )
    .join("");
  const grey = "#c8d1dc";
  $("legend").innerHTML =
    items +
    `<span class="item">${shapeSvg("square", grey)}owned fleet</span><span class="item">${shapeSvg("circle", grey)}gig driver</span>` +
    Object.keys(SLA_COLOURS)
      .map((s) => `<span class="item">${shapeSvg("tri", SLA_COLOURS[s])}order ${SLA_LABELS[s]}</span>`)
      .join("") +
    `<span class="item">${shapeSvg("tri", "#8b98a9", "#ffffff")}express order</span>` +
    `<span class="item">${shapeSvg("tri", "#8b98a9", "rgba(0,0,0,.6)", 0.4)}order on board</span>` +
    `<span class="item zones" id="legend-zones"></span>`;
  updateLegendZones();
  updateLegendCounts();
}

function updateLegendZones() {
  const el = $("legend-zones");
  if (!el) return;
  el.hidden = S.zoneMode === "none";
  if (S.zoneMode === "surge")
    el.innerHTML = `zone surge ×1 <span class="ramp" style="background:linear-gradient(90deg,rgba(255,138,61,.07),rgba(255,138,61,.33))"></span> ×2+`;
  else if (S.zoneMode === "gap")
    el.innerHTML = `zone: spare drivers <span class="ramp" style="background:linear-gradient(90deg,rgba(79,157,255,.3),rgba(79,157,255,.06),rgba(240,82,79,.07),rgba(240,82,79,.35))"></span> orders waiting`;
  else el.innerHTML = "";
}

function updateLegendCounts() {
  const legend = $("legend");
  for (const item of legend.querySelectorAll("[data-status]")) {
    const k = Number(item.dataset.status);
    const counts = S.runs.map((run) => (run.statusCounts ? run.statusCounts[k] || 0 : null));
    const text = counts.every((c) => c == null) ? "" : counts.map((c) => (c == null ? "—" : c)).join(" / ");
    const cnt = item.querySelector(".cnt");
    if (cnt.textContent !== text) cnt.textContent = text;
    if (item.hasAttribute("data-off")) item.style.opacity = S.showOff ? "1" : "0.55";
  }
}

// ------------------------------------------------------------------------------------------ charts
function makeCharts() {
  if (typeof window.uPlot !== "function") {
    setConn("charts unavailable: uPlot did not load", true);
    return;
  }
  const axisBase = {
    stroke: "#8b98a9",
    font: "11px system-ui, sans-serif",
    grid: { stroke: "rgba(140,160,190,0.12)", width: 1 },
    ticks: { stroke: "rgba(140,160,190,0.25)", width: 1, size: 4 },
  };
  for (const [name, def] of Object.entries(CHARTS)) {
    const el = $(def.el);
    const series = [{ label: "Time", value: (u, v) => (v == null ? "—" : hhmm(v)) }];
    S.runs.forEach((run, r) => {
      for (const s of def.series) {
        series.push({
          label: S.runs.length > 1 ? `${s.label} ${RUN_TAGS[r]}` : s.label,
          stroke: s.colour,
          width: 1.6,
          dash: r ? [6, 4] : undefined,
          scale: s.scale,
          spanGaps: true,
          points: { show: (u) => u.data[0].length < 4, size: 5 },
          value: (u, v) => (v == null ? "—" : s.fmt(v)),
        });
      }
    });
    const axes = [
      {
        ...axisBase,
        values: (u, splits) => splits.map((v) => hhmm(v)),
        incrs: [300, 600, 900, 1800, 3600, 7200, 10800, 14400, 21600, 43200],
        space: 44,
      },
    ];
    const scales = { x: { time: false, range: () => [S.replay.tMin, S.replay.tMax] } };
    if (name === "rates") {
      scales.rate = { range: [0, 1] };
      axes.push({ ...axisBase, scale: "rate", size: 44, values: (u, splits) => splits.map((v) => `${Math.round(v * 100)}%`) });
    } else if (name === "pressure") {
      scales.surge = { range: (u, lo, hi) => [1, Math.max(1.5, (hi || 1) * 1.05)] };
      scales.count = { range: (u, lo, hi) => [0, Math.max(10, (hi || 0) * 1.1)] };
      axes.push({ ...axisBase, scale: "surge", size: 44, values: (u, splits) => splits.map((v) => `×${v.toFixed(1)}`) });
      axes.push({ ...axisBase, scale: "count", side: 1, size: 52, grid: { show: false }, values: (u, splits) => splits.map((v) => `${v}`) });
    } else {
      scales.min = { range: (u, lo, hi) => [0, Math.max(10, (hi || 0) * 1.1)] };
      scales.eur = { range: (u, lo, hi) => [Math.min(0, (lo || 0) * 1.1), Math.max(100, (hi || 0) * 1.1)] };
      axes.push({ ...axisBase, scale: "min", size: 44, values: (u, splits) => splits.map((v) => `${v}`) });
      axes.push({
        ...axisBase,
        scale: "eur",
        side: 1,
        size: 52,
        grid: { show: false },
        values: (u, splits) => splits.map((v) => (Math.abs(v) >= 1000 ? `€${(v / 1000).toFixed(v % 1000 ? 1 : 0)}k` : `€${v}`)),
      });
    }
    const data = [[], ...series.slice(1).map(() => [])];
    // one compact legend line (colour = metric; solid = run A, dashed = run B)
    const leg = document.createElement("div");
    leg.className = "chart-legend";
    leg.innerHTML =
      def.series.map((s) => `<span><span class="sw" style="border-color:${s.colour}"></span>${esc(s.label)}</span>`).join("") +
      (S.runs.length > 1
        ? `<span><span class="sw" style="border-color:#c8d1dc"></span>A</span><span><span class="sw dash" style="border-color:#c8d1dc"></span>B</span>`
        : "");
    el.parentElement.insertBefore(leg, el);
    const u = new window.uPlot(
      {
        width: Math.max(100, el.clientWidth),
        height: Math.max(60, el.clientHeight),
        series,
        axes,
        scales,
        legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { show: false } },
        padding: [6, 16, 0, 0],
        hooks: { draw: [drawChartCursor] },
      },
      data,
      el,
    );
    S.charts[name] = { u, el, def };
  }
  const ro = new ResizeObserver(() => requestAnimationFrame(sizeCharts));
  for (const c of Object.values(S.charts)) ro.observe(c.el);
  sizeCharts();
}

function sizeCharts() {
  for (const c of Object.values(S.charts)) {
    const w = Math.max(100, Math.floor(c.el.clientWidth));
    const h = Math.max(60, Math.floor(c.el.clientHeight));
    if (c.u.width !== w || c.u.height !== h) c.u.setSize({ width: w, height: h });
  }
}

function drawChartCursor(u) {
  if (S.mode !== "replay") return;
  const x = u.valToPos(S.replay.t, "x", true);
  if (!Number.isFinite(x)) return;
  const ctx = u.ctx;
  ctx.save();
  ctx.strokeStyle = "rgba(230,237,243,0.55)";
  ctx.lineWidth = Math.max(1, window.devicePixelRatio || 1);
  ctx.beginPath();
  ctx.moveTo(x, u.bbox.top);
  ctx.lineTo(x, u.bbox.top + u.bbox.height);
  ctx.stroke();
  ctx.restore();
}

function kpiInit() {
  S.kpi.x = [];
  S.kpi.y = S.runs.map(() => {
    const m = {};
    for (const def of Object.values(CHARTS)) for (const s of def.series) m[s.key] = [];
    return m;
  });
}

/** Live: one point per new frame time (a repeated or older frame, e.g. after a reconnect, adds nothing). */
function kpiAddLive(fr) {
  const x = S.kpi.x;
  const y = S.kpi.y[0];
  const last = x.length ? x[x.length - 1] : -Infinity;
  if (fr.t < last) return;
  const same = fr.t === last;
  if (!same) x.push(fr.t);
  for (const key of Object.keys(y)) {
    const v = fr.kpi ? fr.kpi[key] : null;
    if (same) y[key][y[key].length - 1] = v ?? null;
    else y[key].push(v ?? null);
  }
  S.chartsDirty = true;
}

/** The day's KPI series from the server (GET /v1/runs/{r}/kpis): live, what was sampled before this page
 * opened (watched or not); replay, every recorded frame. Runs are merged on one time axis. */
async function loadKpiSeries() {
  const all = await Promise.all(S.runs.map((run) => api(`/v1/runs/${run.apiRun}/kpis`)));
  const times = [...new Set(all.flatMap((b) => b.t))].sort((a, b) => a - b);
  kpiInit();
  S.kpi.x = times;
  all.forEach((b, r) => {
    const at = new Map(b.t.map((t, k) => [t, k]));
    const y = S.kpi.y[r];
    for (const key of Object.keys(y)) {
      const src = b.kpi[key] || [];
      y[key] = times.map((t) => (at.has(t) ? (src[at.get(t)] ?? null) : null));
    }
  });
  S.chartsDirty = true;
  scheduleDraw();
}

function kpiAddSample(t, frames) {
  S.kpi.x.push(t);
  frames.forEach((fr, r) => {
    const y = S.kpi.y[r];
    for (const key of Object.keys(y)) y[key].push(fr && fr.kpi ? (fr.kpi[key] ?? null) : null);
  });
  S.chartsDirty = true;
}

function updateCharts() {
  S.chartsDirty = false;
  S.chartsLast = performance.now();
  for (const c of Object.values(S.charts)) {
    const data = [S.kpi.x];
    S.runs.forEach((run, r) => {
      for (const s of c.def.series) data.push(S.kpi.y[r][s.key]);
    });
    c.u.setData(data);
  }
  document.body.dataset.kpiPoints = String(S.kpi.x.length);
}

// ------------------------------------------------------------------------------------ driver table
function buildTableHead() {
  const tr = document.querySelector("#drivers thead tr");
  tr.innerHTML = TABLE_COLS.map(
    (c) => `<th scope="col" class="${c.cls || ""}" data-key="${c.key}" aria-sort="none"><button type="button">${esc(c.label)}</button></th>`,
  ).join("");
  tr.addEventListener("click", (e) => {
    const th = e.target.closest("th");
    if (!th) return;
    const key = th.dataset.key;
    if (S.table.key === key) S.table.dir = -S.table.dir;
    else {
      S.table.key = key;
      S.table.dir = key === "id" || key === "status" ? 1 : -1;
    }
    renderTable();
  });
  const tbody = document.querySelector("#drivers tbody");
  const open = (e) => {
    const row = e.target.closest("tr[data-id]");
    if (row) pick("driver", Number(row.dataset.id), S.table.run);
  };
  tbody.addEventListener("click", open);
  tbody.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      open(e);
    }
  });
  const seg = $("table-run");
  if (S.runs.length > 1) {
    seg.hidden = false;
    seg.addEventListener("click", (e) => {
      const b = e.target.closest("button[data-run]");
      if (!b) return;
      S.table.run = Number(b.dataset.run);
      for (const x of seg.querySelectorAll("button")) x.setAttribute("aria-pressed", String(x === b));
      renderTable();
    });
  }
}

function renderTable() {
  S.table.dirty = false;
  S.table.last = performance.now();
  const run = S.runs[S.table.run];
  const tbody = document.querySelector("#drivers tbody");
  for (const th of document.querySelectorAll("#drivers thead th")) {
    th.setAttribute("aria-sort", th.dataset.key === S.table.key ? (S.table.dir > 0 ? "ascending" : "descending") : "none");
  }
  if (!run || !run.frame) return;
  const fr = run.frame;
  const tab = run.table;
  const city = run.city;
  const n = fr.drivers.status.length;
  const names = city.status_names;
  const owned = city.owned;
  const key = S.table.key;
  const dir = S.table.dir;
  let get;
  if (key === "id") get = (i) => i;
  else if (key === "status") get = (i) => fr.drivers.status[i];
  else get = (i) => (tab && tab[key] ? tab[key][i] : null);
  const idx = Array.from({ length: n }, (_, i) => i);
  const vals = idx.map(get);
  idx.sort((p, q) => {
    const a = vals[p];
    const b = vals[q];
    if (a == null && b == null) return p - q;
    if (a == null) return 1;
    if (b == null) return -1;
    return a === b ? p - q : a < b ? -dir : dir;
  });
  const rows = idx.slice(0, TABLE_ROWS);
  const f = (arr, i, fmt) => (arr ? fmt(arr[i]) : "—");
  const num = (d) => (v) => (v == null ? "—" : Number(v).toFixed(d));
  const sel = S.pick && S.pick.kind === "driver" && S.pick.run === S.table.run ? S.pick.id : -1;
  let html = "";
  for (const i of rows) {
    const st = names[fr.drivers.status[i]] || "?";
    html +=
      `<tr data-id="${i}" tabindex="0"${i === sel ? ' class="sel"' : ""}>` +
      `<td class="l">#${i}</td>` +
      `<td class="l"><span class="dot${owned[i] ? " sq" : ""}" title="${owned[i] ? "owned fleet" : "gig"}" style="background:${STATUS_COLOURS[st] || "#ddd"}"></span>${esc(label(st))}</td>` +
      `<td>${f(tab && tab.acceptance, i, pct0)}</td><td>${f(tab && tab.on_time, i, pct0)}</td>` +
      `<td>${f(tab && tab.rating, i, num(2))}</td><td>${f(tab && tab.service_min, i, num(1))}</td>` +
      `<td>${f(tab && tab.performance, i, num(2))}</td><td>${f(tab && tab.earnings, i, (v) => eur(v))}</td>` +
      `<td>${f(tab && tab.deliveries, i, (v) => (v == null ? "—" : String(v)))}</td></tr>`;
  }
  tbody.innerHTML = html;
  const colLabel = TABLE_COLS.find((c) => c.key === key).label.toLowerCase();
  $("table-note").textContent =
    `${Math.min(TABLE_ROWS, n)} of ${n}${S.runs.length > 1 ? ` in run ${RUN_TAGS[S.table.run]}` : ""} · by ${colLabel}` +
    (tab ? "" : " · scorecards arrive in a moment");
}

// ---------------------------------------------------------------------------------------- details
function dField(labelText, name, value, seconds) {
  const attr = seconds != null && Number.isFinite(seconds) ? ` data-seconds="${seconds}"` : "";
  return `<dt>${esc(labelText)}</dt><dd data-field="${name}"${attr}>${value}</dd>`;
}
function tField(labelText, name, seconds) {
  return dField(labelText, name, esc(hhmmss(seconds)), seconds);
}
function chip(text, colour) {
  return `<span class="chip">${colour ? `<i style="background:${colour}"></i>` : ""}${esc(text)}</span>`;
}
function runPrefix(r) {
  return S.runs.length > 1 ? `<span class="run-tag">${RUN_TAGS[r]}</span>` : "";
}
const closeBtn = `<button type="button" class="btn close" data-action="close" aria-label="close details">Close</button>`;

function renderDetails() {
  const el = $("details");
  const pk = S.pick;
  if (!pk) {
    el.innerHTML = `<p class="muted">Click a driver or an order on the map, or a row of the table.</p>`;
    return;
  }
  const what = pk.kind === "driver" ? "Driver" : "Order";
  if (pk.error) {
    el.innerHTML = `<h3>${runPrefix(pk.run)}${what} #${pk.id}${closeBtn}</h3><p class="note">${esc(pk.error)}</p>`;
    return;
  }
  if (S.mode === "live") {
    if (!pk.data) {
      el.innerHTML = `<h3>${runPrefix(pk.run)}${what} #${pk.id}${closeBtn}</h3><p class="note">loading…</p>`;
      return;
    }
    el.innerHTML = pk.kind === "order" ? orderLive(pk.data) : driverLive(pk.data);
    return;
  }
  el.innerHTML = pk.kind === "order" ? orderReplay(pk) : driverReplay(pk);
}

function orderLive(o) {
  const sla = o.sla || "";
  return (
    `<h3>Order #${o.id} ${chip(label(o.status))} ${sla ? chip(SLA_LABELS[sla] || label(sla), SLA_COLOURS[sla]) : ""} ${chip(
      label(o.level),
    )}${closeBtn}</h3><dl>` +
    dField("Status", "status", esc(label(o.status))) +
    dField("SLA", "sla", esc(SLA_LABELS[sla] || label(sla || "—"))) +
    dField("Tier", "level", esc(label(o.level))) +
    dField(
      "Driver",
      "driver",
      o.driver == null ? "—" : `<button type="button" class="btn-link" data-action="driver" data-id="${o.driver}">#${o.driver}</button>`,
    ) +
    tField("Placed", "placed", o.placed) +
    tField("Ready", "ready", o.ready) +
    tField("Deadline", "deadline", o.deadline) +
    tField("ETA pick-up", "eta_pickup", o.eta_pickup) +
    tField("ETA drop-off", "eta_dropoff", o.eta_dropoff) +
    tField("Picked up", "picked_up", o.picked_up) +
    tField("Delivered", "delivered", o.delivered) +
    dField("Fee", "fee", esc(eur(o.fee))) +
    dField("Payout", "payout", esc(eur(o.payout))) +
    dField("Pick-up", "pickup", `${o.pickup.x}, ${o.pickup.y}`) +
    dField("Drop-off", "dropoff", `${o.dropoff.x}, ${o.dropoff.y}`) +
    `</dl>`
  );
}

function driverLive(d) {
  const sc = d.scorecard || {};
  const route = (d.route || [])
    .map(
      (s, n) =>
        `<tr><td>${n + 1}</td><td>${s.kind === "pickup" ? "pick-up" : "drop-off"}</td><td><button type="button" class="btn-link" data-action="order" data-id="${s.order}">#${s.order}</button></td><td data-field="route_eta" data-seconds="${s.eta ?? ""}">${esc(hhmmss(s.eta))}</td></tr>`,
    )
    .join("");
  return (
    `<h3>Driver #${d.id} ${chip(label(d.status), STATUS_COLOURS[d.status])} ${chip(d.owned ? "owned fleet" : "gig")} ${chip(d.vehicle)}${closeBtn}</h3><dl>` +
    dField("Status", "status", esc(label(d.status))) +
    dField("Zone", "zone", esc(d.zone)) +
    dField("Position", "position", `${d.x}, ${d.y}`) +
    dField("Earnings", "earnings", esc(eur(d.earnings))) +
    dField("Acceptance", "acceptance_rate", esc(pct(sc.acceptance_rate))) +
    dField("On time", "on_time_rate", esc(pct(sc.on_time_rate))) +
    dField("Rating", "rating", esc(sc.rating == null ? "—" : sc.rating.toFixed(2))) +
    dField("Service", "service_min", esc(sc.service_min == null ? "—" : `${sc.service_min.toFixed(1)} min`)) +
    dField("Performance", "performance", esc(sc.performance == null ? "—" : sc.performance.toFixed(3))) +
    dField("Deliveries", "deliveries", esc(sc.deliveries ?? "—")) +
    dField("Offers / accepts", "offers", `${esc(sc.offers ?? "—")} / ${esc(sc.accepts ?? "—")}`) +
    dField("Suspensions", "suspensions", esc(sc.suspensions ?? "—")) +
    `</dl>` +
    (route
      ? `<table class="route"><thead><tr><th scope="col">#</th><th scope="col">Stop</th><th scope="col">Order</th><th scope="col">ETA</th></tr></thead><tbody>${route}</tbody></table>`
      : `<p class="note">No stops on the route.</p>`)
  );
}

function orderReplay(pk) {
  const run = S.runs[pk.run];
  const fr = run.frame;
  const city = run.city;
  const o = fr.orders;
  const k = o.id.indexOf(pk.id);
  if (k < 0)
    return `<h3>${runPrefix(pk.run)}Order #${pk.id}${closeBtn}</h3><p class="note">Not open at ${esc(fr.clock)}: delivered, cancelled or not yet placed.</p>`;
  const sla = city.sla_names[o.sla[k]];
  const st = city.order_status_names[o.status[k]];
  const lvl = city.level_names[o.level[k]];
  const drv = o.driver[k];
  return (
    `<h3>${runPrefix(pk.run)}Order #${pk.id} ${chip(label(st))} ${chip(SLA_LABELS[sla] || label(sla), SLA_COLOURS[sla])} ${chip(label(lvl))}${closeBtn}</h3><dl>` +
    dField("Status", "status", esc(label(st))) +
    dField("SLA", "sla", esc(SLA_LABELS[sla] || label(sla))) +
    dField("Tier", "level", esc(label(lvl))) +
    dField(
      "Driver",
      "driver",
      drv >= 0 ? `<button type="button" class="btn-link" data-action="driver" data-id="${drv}">#${drv}</button>` : "—",
    ) +
    dField("Pick-up", "pickup", `${o.px[k]}, ${o.py[k]}`) +
    dField("Drop-off", "dropoff", `${o.dx[k]}, ${o.dy[k]}`) +
    `</dl><p class="note">Replay at ${esc(fr.clock)}: ETAs come from the live simulator and are not recorded.</p>`
  );
}

/** The zone whose rectangle holds (x, y), else the nearest one (rectangles leave gaps between them). */
function zoneOf(city, x, y) {
  const zs = city.zones || [];
  let best = null;
  let bestD = Infinity;
  for (let z = 0; z < zs.length; z++) {
    const [x0, y0, x1, y1] = zs[z];
    const dx = Math.max(x0 - x, 0, x - x1);
    const dy = Math.max(y0 - y, 0, y - y1);
    const d = dx * dx + dy * dy;
    if (d < bestD) {
      bestD = d;
      best = z;
    }
  }
  return best;
}

function driverReplay(pk) {
  const run = S.runs[pk.run];
  const fr = run.frame;
  const city = run.city;
  const d = fr.drivers;
  if (pk.id < 0 || pk.id >= d.x.length) return `<h3>Driver #${pk.id}${closeBtn}</h3><p class="note">No such driver.</p>`;
  const st = city.status_names[d.status[pk.id]];
  const tab = run.table;
  const tv = (key) => (tab && tab[key] ? tab[key][pk.id] : null);
  const o = fr.orders;
  const mine = [];
  for (let k = 0; k < o.id.length; k++) if (o.driver[k] === pk.id) mine.push(k);
  const rows = mine
    .map(
      (k) =>
        `<tr><td><button type="button" class="btn-link" data-action="order" data-id="${o.id[k]}">#${o.id[k]}</button></td><td>${esc(
          label(city.order_status_names[o.status[k]]),
        )}</td><td>${esc(SLA_LABELS[city.sla_names[o.sla[k]]] || "")}</td></tr>`,
    )
    .join("");
  const zone = zoneOf(city, d.x[pk.id], d.y[pk.id]);
  return (
    `<h3>${runPrefix(pk.run)}Driver #${pk.id} ${chip(label(st), STATUS_COLOURS[st])} ${chip(city.owned[pk.id] ? "owned fleet" : "gig")}${closeBtn}</h3><dl>` +
    dField("Status", "status", esc(label(st))) +
    dField("Zone", "zone", zone == null ? "—" : String(zone)) +
    dField("Position", "position", `${d.x[pk.id]}, ${d.y[pk.id]}`) +
    dField("Earnings", "earnings", esc(eur(tv("earnings")))) +
    dField("Acceptance", "acceptance_rate", esc(pct(tv("acceptance")))) +
    dField("On time", "on_time_rate", esc(pct(tv("on_time")))) +
    dField("Rating", "rating", esc(tv("rating") == null ? "—" : tv("rating").toFixed(2))) +
    dField("Service", "service_min", esc(tv("service_min") == null ? "—" : `${tv("service_min").toFixed(1)} min`)) +
    dField("Performance", "performance", esc(tv("performance") == null ? "—" : tv("performance").toFixed(3))) +
    dField("Deliveries", "deliveries", esc(tv("deliveries") ?? "—")) +
    `</dl>` +
    (rows
      ? `<table class="route"><thead><tr><th scope="col">Order</th><th scope="col">State</th><th scope="col">SLA</th></tr></thead><tbody>${rows}</tbody></table>`
      : `<p class="note">No orders on board or assigned at ${esc(fr.clock)}.</p>`) +
    `<p class="note">Replay: the route's order and ETAs are not recorded.</p>`
  );
}

/** Opens the details of a driver or an order (of run `run`); resolves once they are shown. */
async function pick(kind, id, run = 0) {
  if (kind !== "driver" && kind !== "order") throw new Error(`pick: kind must be "driver" or "order", got ${kind}`);
  id = Number(id);
  S.pick = { kind, id, run: Number(run) || 0, data: null, error: null, seq: ++pickSeq };
  S.table.dirty = true;
  renderDetails();
  scheduleDraw();
  if (S.mode === "live") await refreshPick();
  return drawn();
}

function unpick() {
  S.pick = null;
  S.table.dirty = true;
  renderDetails();
  scheduleDraw();
}

/** Live: (re)reads the picked order or driver from the tracking API. */
async function refreshPick() {
  const pk = S.pick;
  if (!pk || S.mode !== "live") return;
  const seq = pk.seq;
  pk.fetchedAt = performance.now();
  try {
    const data = await api(pk.kind === "order" ? `/v1/orders/${pk.id}` : `/v1/drivers/${pk.id}`);
    if (!S.pick || S.pick.seq !== seq) return;
    S.pick.data = data;
    S.pick.error = null;
  } catch (err) {
    if (!S.pick || S.pick.seq !== seq) return;
    S.pick.error = err instanceof ApiError && err.status === 404 ? err.detail : explain(err);
  }
  renderDetails();
  scheduleDraw();
}

function bindDetails() {
  $("details").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-action]");
    if (!b) return;
    const run = S.pick ? S.pick.run : 0;
    if (b.dataset.action === "close") unpick();
    else if (b.dataset.action === "driver") pick("driver", Number(b.dataset.id), run);
    else if (b.dataset.action === "order") pick("order", Number(b.dataset.id), run);
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && S.pick) unpick();
  });
}

// ------------------------------------------------------------------------------------------- setup
function buildPanes() {
  const maps = $("maps");
  const first = maps.querySelector(".map-pane");
  S.runs.forEach((run, r) => {
    let pane = first;
    if (r > 0) {
      pane = first.cloneNode(true);
      pane.dataset.run = String(r);
      const cv = pane.querySelector("canvas");
      cv.id = `map${r}`;
      maps.appendChild(pane);
    }
    run.pane = pane;
    pane.querySelector("[data-role=tag]").textContent = RUN_TAGS[r] || String(r);
    pane.querySelector("[data-role=tag]").hidden = S.runs.length < 2;
    pane.querySelector("[data-role=label]").textContent = S.runs.length > 1 ? run.info.label : `${run.info.label} · ${run.city.scenario}`;
    run.map = new MapView(run, pane.querySelector("canvas"));
  });
  new ResizeObserver(() => scheduleDraw()).observe(maps);
}

function bindToolbar() {
  const seg = $("zone-mode");
  seg.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-zone]");
    if (!b) return;
    S.zoneMode = b.dataset.zone;
    for (const x of seg.querySelectorAll("button")) x.setAttribute("aria-pressed", String(x === b));
    updateLegendZones();
    scheduleDraw();
  });
  $("show-off").addEventListener("change", (e) => {
    S.showOff = e.target.checked;
    scheduleDraw();
  });
  $("fit").addEventListener("click", fitView);
}

function metaText() {
  const runs = S.runs;
  if (runs.length === 1) {
    const c = runs[0].city;
    return `scenario <b>${esc(c.scenario)}</b> · policy <b>${esc(runs[0].info.policy || c.policy || "?")}</b> · seed <b>${esc(
      runs[0].info.seed ?? c.seed,
    )}</b> · ${c.n_drivers} drivers`;
  }
  return runs.map((run, r) => `<b>${RUN_TAGS[r]}</b> ${esc(run.info.label)}`).join(" &nbsp;vs&nbsp; ") + ` · scenario <b>${esc(runs[0].city.scenario)}</b>`;
}

async function start() {
  readToken();
  window.addEventListener("hashchange", readToken);
  let session;
  for (let attempt = 0; ; attempt++) {
    try {
      session = await api("/v1/session");
      break;
    } catch (err) {
      setConn(explain(err), true);
      await sleep(Math.min(15000, 2000 * 2 ** attempt));
    }
  }
  S.mode = session.mode;
  S.kpiSeries = session.kpi_series === true;
  const cities = await Promise.all(session.runs.map((info) => api(`/v1/runs/${info.run}/city`)));
  S.runs = session.runs.map((info, k) => ({ r: k, apiRun: info.run, info, city: cities[k], frame: null, table: null, map: null }));
  S.replay.tMin = Math.min(...cities.map((c) => c.t_start));
  S.replay.tMax = Math.max(...cities.map((c) => c.t_end));
  setConn("");
  $("meta").innerHTML = metaText();
  document.body.dataset.runCount = String(S.runs.length);
  document.body.dataset.mode = S.mode;
  document.body.classList.toggle("multi", S.runs.length > 1);
  buildPanes();
  buildLegend();
  buildTiles();
  buildTableHead();
  bindToolbar();
  bindDetails();
  kpiInit();
  makeCharts();
  for (const run of S.runs) run.map.resize();
  fitView();
  if (S.mode === "live") startLive(session);
  else await startReplay();
}

// -------------------------------------------------------------------------------------------- live
function applyLiveState(st) {
  if (st.error) setConn(`${st.error.detail} (error id ${st.error.error_id})`, true);
  if (typeof st.paused === "boolean") S.live.paused = st.paused;
  if (typeof st.speed === "number") S.live.speed = st.speed;
  if (st.done === true) S.live.done = true;
  const play = $("play");
  play.textContent = S.live.paused ? "Play" : "Pause";
  const sel = $("speed");
  const want = String(S.live.speed);
  if (![...sel.options].some((o) => o.value === want)) {
    const opt = document.createElement("option");
    opt.value = want;
    opt.textContent = `${want}×`;
    const after = [...sel.options].find((o) => Number(o.value) > S.live.speed || o.value === "0");
    sel.insertBefore(opt, after || null);
  }
  if (document.activeElement !== sel) sel.value = want;
  scheduleDraw();
}

function startLive(session) {
  $("live-controls").hidden = false;
  applyLiveState(session);
  $("play").addEventListener("click", async () => {
    try {
      applyLiveState(await postJSON("/v1/control", { paused: !S.live.paused }));
    } catch (err) {
      setConn(explain(err), true);
    }
  });
  $("speed").addEventListener("change", async (e) => {
    try {
      applyLiveState(await postJSON("/v1/control", { speed: Number(e.target.value) }));
    } catch (err) {
      setConn(explain(err), true);
    }
  });
  const history = S.kpiSeries ? loadKpiSeries().catch((err) => setConn(`KPI chart: ${explain(err)}`, true)) : null;
  Promise.resolve(history).then(() => streamLoop());
  pollSession();
}

/** Keeps play/pause and speed in step with the server (someone else may have changed them). */
async function pollSession() {
  while (!S.live.done) {
    await sleep(3000);
    if (S.live.done) return;
    try {
      applyLiveState(await api("/v1/session"));
    } catch {
      /* the stream loop reports connection problems */
    }
  }
}

function onLiveFrame(fr) {
  const run = S.runs[0];
  kpiAddLive(fr);
  if (fr.table) {
    run.table = fr.table;
    S.table.dirty = true;
  }
  if (run.frame && fr.i < run.frame.i) return; // a kept frame replayed after a reconnect
  if (!run.frame || run.frame.drivers.status !== fr.drivers.status) S.table.dirty = true;
  run.frame = fr;
  if (fr.done) S.live.done = true;
  scheduleDraw();
  if (S.pick && S.pick.data && performance.now() - (S.pick.fetchedAt || 0) >= DETAILS_REFRESH_MS) refreshPick();
}

async function streamLoop() {
  let backoff = 1000;
  let everConnected = false;
  while (true) {
    const ctrl = new AbortController();
    let lastBytes = performance.now();
    const watchdog = setInterval(() => {
      if (performance.now() - lastBytes > STREAM_IDLE_MS) ctrl.abort();
    }, 5000);
    try {
      if (everConnected) {
        // a day that restarted (a new server) starts over: reload the page rather than mix two days
        const s = await api("/v1/session");
        const have = S.runs[0].frame ? S.runs[0].frame.i : -1;
        if (s.runs[0] && s.runs[0].frames - 1 < have) {
          location.reload();
          return;
        }
      }
      const res = await fetch("/v1/stream", {
        headers: authHeaders({ Accept: "text/event-stream" }),
        signal: ctrl.signal,
        cache: "no-store",
      });
      if (!res.ok) throw new ApiError(res.status, res.statusText);
      everConnected = true;
      backoff = 1000;
      setConn("");
      await readSSE(
        res.body,
        (type, data) => {
          if (type !== "frame") return;
          let fr;
          try {
            fr = JSON.parse(data);
          } catch {
            return; // a torn event: skip it, the next frame replaces it
          }
          onLiveFrame(fr);
          // the day's last frame: nothing more will come, so close the stream (a server stopping with
          // Ctrl-C then has no open response to wait for)
          if (fr.done) ctrl.abort();
        },
        () => {
          lastBytes = performance.now();
        },
      );
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) setConn(explain(err), true);
    } finally {
      clearInterval(watchdog);
    }
    if (S.live.done && S.runs[0].frame && S.runs[0].frame.done) {
      setConn("");
      return; // the day is over and its last frame is on screen: nothing more will come
    }
    if (!$("conn").classList.contains("bad")) setConn("reconnecting…");
    await sleep(backoff + Math.random() * 500);
    backoff = Math.min(backoff * 2, 15000);
  }
}

// ------------------------------------------------------------------------------------------ replay
let seekWanted = null;
let seekBusy = false;
let seekWaiters = [];

function frameUrl(run, t) {
  return `/v1/runs/${run.apiRun}/frames/at?t=${encodeURIComponent(t)}`;
}

/** Shows every run at simulated time t (seconds); resolves once drawn. Seeks coalesce: the latest wins. */
function seekTo(t) {
  seekWanted = Math.min(S.replay.tMax, Math.max(S.replay.tMin, t));
  const p = new Promise((res) => seekWaiters.push(res));
  if (!seekBusy) pumpSeek();
  return p;
}

async function pumpSeek() {
  seekBusy = true;
  while (seekWanted !== null) {
    const t = seekWanted;
    seekWanted = null;
    const waiters = seekWaiters;
    seekWaiters = [];
    try {
      const frames = await Promise.all(S.runs.map((run) => api(frameUrl(run, t))));
      frames.forEach((fr, r) => {
        const run = S.runs[r];
        run.frame = fr;
        if (fr.table) run.table = fr.table;
      });
      S.replay.t = t;
      S.table.dirty = true;
      updateSlider();
      if (S.pick) renderDetails();
      for (const c of Object.values(S.charts)) c.u.redraw(false, false);
      setConn("");
      await drawn();
    } catch (err) {
      setConn(explain(err), true);
    }
    for (const w of waiters) w();
  }
  seekBusy = false;
}

function updateSlider() {
  const sl = $("slider");
  const m = Math.floor(S.replay.t / 60);
  if (document.activeElement !== sl || S.replay.playing) sl.value = String(m);
  $("slider-label").textContent = hhmm(S.replay.t);
}

async function playLoop() {
  let last = performance.now();
  while (S.replay.playing) {
    const now = performance.now();
    const dt = (now - last) / 1000;
    last = now;
    let t = S.replay.t + S.replay.speed * dt;
    if (t >= S.replay.tMax) {
      t = S.replay.tMax;
      S.replay.playing = false;
    }
    await seekTo(t);
    await sleep(Math.max(0, REPLAY_TICK_MS - (performance.now() - now)));
  }
  setPlayButton();
}

function setPlayButton() {
  const b = $("rplay");
  b.textContent = S.replay.playing ? "Pause" : "Play";
  scheduleDraw();
}

/** Fills the replay KPI chart: every run sampled each REPLAY_SAMPLE_S, giving way to seeks. */
async function sampleKpis() {
  const { tMin, tMax } = S.replay;
  for (let t = tMin; ; t += REPLAY_SAMPLE_S) {
    const tt = Math.min(t, tMax);
    while (seekBusy) await sleep(40);
    let frames;
    try {
      frames = await Promise.all(S.runs.map((run) => api(frameUrl(run, tt))));
    } catch (err) {
      setConn(`KPI chart: ${explain(err)}`, true);
      return;
    }
    kpiAddSample(tt, frames);
    scheduleDraw();
    if (tt >= tMax) break;
  }
}

async function startReplay() {
  $("replay-controls").hidden = false;
  const sl = $("slider");
  sl.min = String(Math.floor(S.replay.tMin / 60));
  sl.max = String(Math.ceil(S.replay.tMax / 60));
  sl.value = sl.min;
  S.replay.speed = Number($("rspeed").value);
  sl.addEventListener("input", () => {
    $("slider-label").textContent = hhmm(Number(sl.value) * 60);
    seekTo(Number(sl.value) * 60);
  });
  $("rspeed").addEventListener("change", (e) => {
    S.replay.speed = Number(e.target.value);
  });
  $("rplay").addEventListener("click", () => {
    if (S.replay.playing) {
      S.replay.playing = false;
      setPlayButton();
      return;
    }
    if (S.replay.t >= S.replay.tMax) S.replay.t = S.replay.tMin; // from the start again
    S.replay.playing = true;
    setPlayButton();
    playLoop();
  });
  await seekTo(S.replay.tMin);
  if (S.kpiSeries) {
    try {
      await loadKpiSeries();
    } catch (err) {
      setConn(`KPI chart: ${explain(err)}`, true);
    }
  } else sampleKpis();
}

// ---------------------------------------------------------------------------------------- window.gd
window.gd = {
  /** Opens the details of `kind` ("driver" | "order") `id` in run `run` (default 0). */
  pick: (kind, id, run = 0) => pick(kind, id, run),
  unpick,
  /** World metres -> [px, py] CSS pixels of the run's map canvas (#map for run 0, #map1 for run 1). */
  project: (x, y, run = 0) => (S.runs[run] && S.runs[run].map ? S.runs[run].map.project(x, y) : [NaN, NaN]),
  /** Replay: shows minute `m` of the day (minutes since midnight) on every map; resolves once drawn. */
  seek: (m) => {
    if (S.mode !== "replay") return Promise.reject(new Error("seek: only in a replay"));
    return seekTo(Number(m) * 60);
  },
  fit: fitView,
  state: S,
};

start().catch((err) => setConn(explain(err), true));
