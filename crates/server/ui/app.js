// The inferwatch dashboard: the overview page.
//
// Native ES modules, no bundler: preact + htm for the page, uPlot for the
// charts, both vendored by scripts/vendor-ui. Everything shown comes from
// the documented REST API (/api/v1/*) with the read token the user gives,
// kept in localStorage and sent as `Authorization: Bearer`.
//
// Per model and version: requests per minute, error rate and p50/p95/p99
// latency over the chosen range, from GET /api/v1/series (the server
// downsamples the per-minute rollups to `points`: two per pixel of chart
// width); beside them the firing and pending alerts from GET
// /api/v1/alerts, each with its summary, and each open alert's start
// marked on its model's charts. Everything refreshes every 5 s.

import { html, render, useEffect, useRef, useState } from "/ui/vendor/htm-preact-standalone.mjs";
import uPlot from "/ui/vendor/uPlot.esm.js";

const TOKEN_KEY = "inferwatch.token";
const RANGE_KEY = "inferwatch.range";
const RANGES = { "15m": 15 * 60, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600 };
const REFRESH_MS = 5000;
const SEVERITY_ORDER = ["critical", "high", "medium", "low", "info"];

// The live uPlot instances by chart id, for tests and the console.
const charts = new Map();
window.inferwatch = { charts, refreshes: 0 };

// The x range every chart shows: the chosen range up to the last refresh.
let shownWindow = { from: 0, to: 1 };

// A uPlot plugin drawing each open alert's start on the chart as a dashed
// vertical line in its severity's colour; `marks()` gives the current
// [{ at (Unix seconds), severity }].
const SEVERITY_COLOUR = { critical: "#b42318", high: "#d92d20", medium: "#dc6803", low: "#1570ef", info: "#667085" };
function alertMarkers(marks) {
  return {
    hooks: {
      draw: (u) => {
        const { ctx } = u;
        const { top, height } = u.bbox;
        ctx.save();
        ctx.lineWidth = 2 * uPlot.pxRatio;
        ctx.setLineDash([6 * uPlot.pxRatio, 4 * uPlot.pxRatio]);
        for (const mark of marks()) {
          const x = Math.round(u.valToPos(mark.at, "x", true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.strokeStyle = SEVERITY_COLOUR[mark.severity] || SEVERITY_COLOUR.info;
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
        }
        ctx.restore();
      },
    },
  };
}

class Unauthorized extends Error {}

async function api(token, path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` },
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) {
    throw new Unauthorized(body.error || `the token was refused (${response.status})`);
  }
  if (!response.ok) {
    throw new Error(`${path.split("?")[0]}: ${response.status} ${body.error || ""}`);
  }
  return body;
}

function sqlString(text) {
  return `'${String(text).replaceAll("'", "''")}'`;
}

// Pixels of one chart: three to a row on a wide window, one on a narrow one.
function chartWidth() {
  const usable = Math.max(320, window.innerWidth - 64);
  const perRow = usable >= 3 * 340 ? 3 : usable >= 2 * 340 ? 2 : 1;
  return Math.floor((usable - (perRow - 1) * 12) / perRow) - 8;
}

async function load(token, range) {
  const to = new Date();
  const from = new Date(to.getTime() - RANGES[range] * 1000);
  const width = chartWidth();
  const points = Math.min(100000, Math.max(2, 2 * width));
  const modelsSql =
    "SELECT model_id, model_version, sum(count) AS events FROM inference_rollups " +
    `WHERE minute >= ${sqlString(from.toISOString())} ` +
    "GROUP BY model_id, model_version ORDER BY model_id, model_version";
  const [models, alerts] = await Promise.all([
    api(token, "/api/v1/query", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sql: modelsSql, limit: 200 }),
    }),
    api(token, "/api/v1/alerts"),
  ]);
  const panels = await Promise.all(
    models.rows.map(async ([modelId, modelVersion, events]) => {
      const series = (metric) => {
        const query = new URLSearchParams({ metric, model_id: modelId, from: from.toISOString(), points });
        if (modelVersion !== null) query.set("model_version", modelVersion);
        return api(token, `/api/v1/series?${query}`);
      };
      const [count, errors, p50, p95, p99] = await Promise.all(
        ["count", "error_rate", "p50", "p95", "p99"].map(series),
      );
      const markers = alerts.alerts
        .filter((alert) => alert.state === "firing" || alert.state === "pending")
        .filter((alert) => alertConcerns(alert, modelId, modelVersion))
        .map((alert) => ({ at: Date.parse(alert.starts_at) / 1000, severity: alert.severity }))
        .filter((mark) => Number.isFinite(mark.at));
      return {
        key: `${modelId}/${modelVersion ?? ""}`,
        markers,
        modelId,
        modelVersion,
        events,
        width,
        volume: [count.timestamps, count.values],
        errors: [errors.timestamps, errors.values.map((v) => (v === null ? null : v * 100))],
        latency: uPlot.join([
          [p50.timestamps, p50.values],
          [p95.timestamps, p95.values],
          [p99.timestamps, p99.values],
        ]),
      };
    }),
  );
  const open = alerts.alerts
    .filter((alert) => alert.state === "firing" || alert.state === "pending")
    .sort(
      (a, b) =>
        (a.state === "firing" ? 0 : 1) - (b.state === "firing" ? 0 : 1) ||
        SEVERITY_ORDER.indexOf(a.severity) - SEVERITY_ORDER.indexOf(b.severity) ||
        String(b.starts_at).localeCompare(String(a.starts_at)),
    );
  return { panels, alerts: open, detection: alerts.detection, from, to };
}

// Whether an alert's group names this model (and this version, when the
// group has one); an alert grouped by neither concerns every model.
function alertConcerns(alert, modelId, modelVersion) {
  const group = alert.group || {};
  if ("model_id" in group && group.model_id !== modelId) return false;
  if ("model_version" in group && group.model_version !== modelVersion) return false;
  return true;
}

function Chart({ id, title, data, series, width, markers, yMin }) {
  const box = useRef(null);
  const marks = useRef(markers);
  marks.current = markers;
  useEffect(() => {
    let plot = charts.get(id);
    if (plot && plot.root.parentNode === box.current) {
      plot.markers = marks.current;
      if (plot.width !== width) plot.setSize({ width, height: plot.height });
      plot.setData(data);
      return;
    }
    plot?.destroy();
    plot = new uPlot(
      {
        width,
        height: 180,
        series: [{}, ...series.map((s) => ({ spanGaps: true, width: 1.5, ...s }))],
        scales: {
          x: { time: true, range: () => [shownWindow.from, shownWindow.to] },
          // Rates and latencies start at zero; an all-zero series shows 0-1.
          y: { range: (u, low, high) => [yMin, Math.max(high, yMin + 1) * 1.05] },
        },
        plugins: [alertMarkers(() => marks.current)],
        axes: [{}, { size: 56 }],
        legend: { live: true },
      },
      data,
      box.current,
    );
    plot.markers = marks.current;
    charts.set(id, plot);
  }, [data, width]);
  useEffect(
    () => () => {
      charts.get(id)?.destroy();
      charts.delete(id);
    },
    [],
  );
  return html`<div class="chart" data-chart=${id}><h3>${title}</h3><div ref=${box}></div></div>`;
}

function ModelPanel({ panel }) {
  const name = panel.modelVersion === null ? panel.modelId : `${panel.modelId} ${panel.modelVersion}`;
  return html`<section class="card model" data-model=${panel.key}>
    <h2>${name} <span class="meta">${Number(panel.events).toLocaleString()} events in range</span></h2>
    <div class="charts">
      <${Chart} id=${`${panel.key}/volume`} title="Requests per minute" data=${panel.volume}
        width=${panel.width} markers=${panel.markers} yMin=${0} series=${[{ label: "requests/min", stroke: "#1570ef", fill: "rgba(21,112,239,0.08)" }]} />
      <${Chart} id=${`${panel.key}/errors`} title="Error rate (%)" data=${panel.errors}
        width=${panel.width} markers=${panel.markers} yMin=${0} series=${[{ label: "errors %", stroke: "#d92d20" }]} />
      <${Chart} id=${`${panel.key}/latency`} title="Latency (ms)" data=${panel.latency} width=${panel.width}
        markers=${panel.markers} yMin=${0}
        series=${[
          { label: "p50", stroke: "#12b76a" },
          { label: "p95", stroke: "#f79009" },
          { label: "p99", stroke: "#d92d20" },
        ]} />
    </div>
  </section>`;
}

function describeGroup(group) {
  if (group === null || group === undefined) return "";
  if (typeof group !== "object") return String(group);
  return Object.entries(group)
    .map(([key, value]) => `${key}=${value}`)
    .join(", ");
}

function Alerts({ alerts, detection }) {
  let body;
  if (alerts === null) body = html`<p class="empty">Loading…</p>`;
  else if (!detection) body = html`<p class="empty">No rules run on this node (start serve with --rules).</p>`;
  else if (alerts.length === 0) body = html`<p class="empty">No firing or pending alerts.</p>`;
  else
    body = html`<ul class="alerts">
      ${alerts.map(
        (alert) => html`<li key=${alert.alert_id} class=${alert.severity} data-alert=${alert.alert_id}>
          <span class="state">${alert.state}</span><strong>${alert.title}</strong>
          <div class="summary">${alert.summary || `${alert.condition} (value ${alert.value})`}</div>
          <div class="meta">
            ${alert.rule_id} · ${alert.severity} · ${describeGroup(alert.group)} · since ${alert.starts_at}
            ${alert.acknowledged ? " · acknowledged" : ""}${alert.silenced ? " · silenced" : ""}
          </div>
        </li>`,
      )}
    </ul>`;
  return html`<section class="card" id="alerts"><h2>Alerts</h2>${body}</section>`;
}

function TokenForm({ onSave, message }) {
  const submit = (event) => {
    event.preventDefault();
    const value = event.target.elements.token.value.trim();
    if (value) onSave(value);
  };
  return html`<form class="token card" id="token-form" onSubmit=${submit}>
    <h2>inferwatch</h2>
    <label for="token">A read token (<code>inferwatch token create --scope read --data DIR</code>)</label>
    <input id="token" name="token" type="password" autocomplete="off" />
    <button type="submit">Open the dashboard</button>
    ${message && html`<p class="error">${message}</p>`}
  </form>`;
}

function App() {
  const [token, setToken] = useState(localStorage.getItem(TOKEN_KEY));
  const [range, setRange] = useState(() => {
    const saved = localStorage.getItem(RANGE_KEY);
    return saved in RANGES ? saved : "15m";
  });
  const [view, setView] = useState({ panels: null, alerts: null, detection: true, error: null, at: null });
  const [refused, setRefused] = useState(null);

  useEffect(() => {
    if (!token) return undefined;
    let stopped = false;
    let busy = false;
    const tick = async () => {
      if (busy) return;
      busy = true;
      try {
        const next = await load(token, range);
        if (stopped) return;
        shownWindow = { from: next.from.getTime() / 1000, to: next.to.getTime() / 1000 };
        setView({ ...next, error: null, at: next.to });
        window.inferwatch.refreshes += 1;
      } catch (failure) {
        if (stopped) return;
        if (failure instanceof Unauthorized) {
          localStorage.removeItem(TOKEN_KEY);
          setRefused(failure.message);
          setToken(null);
          return;
        }
        console.error("inferwatch: refresh failed:", failure);
        setView((old) => ({ ...old, error: failure.message }));
      } finally {
        busy = false;
      }
    };
    tick();
    const timer = setInterval(tick, REFRESH_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [token, range]);

  if (!token) {
    return html`<${TokenForm}
      message=${refused}
      onSave=${(value) => {
        localStorage.setItem(TOKEN_KEY, value);
        setRefused(null);
        setToken(value);
      }} />`;
  }
  const chooseRange = (event) => {
    localStorage.setItem(RANGE_KEY, event.target.value);
    setRange(event.target.value);
  };
  const forget = () => {
    localStorage.removeItem(TOKEN_KEY);
    setToken(null);
  };
  let status = "loading…";
  if (view.error) status = html`<span class="error">${view.error}</span>`;
  else if (view.at) status = `updated ${view.at.toLocaleTimeString()}, every ${REFRESH_MS / 1000} s`;
  return html`<header>
      <h1>inferwatch</h1>
      <label>Range <select id="range" value=${range} onChange=${chooseRange}>
        ${Object.keys(RANGES).map((name) => html`<option value=${name}>last ${name}</option>`)}
      </select></label>
      <span class="status" id="status">${status}</span>
      <span class="spacer"></span>
      <button type="button" onClick=${forget}>Forget token</button>
    </header>
    <main>
      <${Alerts} alerts=${view.alerts} detection=${view.detection} />
      ${view.panels !== null && view.panels.length === 0 &&
      html`<section class="card empty">No events in the last ${range}.</section>`}
      ${(view.panels || []).map((panel) => html`<${ModelPanel} key=${panel.key} panel=${panel} />`)}
    </main>`;
}

render(html`<${App} />`, document.getElementById("app"));
