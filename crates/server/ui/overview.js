// The overview: per model and version, requests per minute, error rate
// and p50/p95/p99 latency over the chosen range, all from one GET
// /api/v1/series/overview (one scan of the per-minute rollups, downsampled
// by the server to `points`: two per pixel of chart width); beside them the firing and pending alerts from GET
// /api/v1/alerts, each with its summary, and each open alert's start
// marked on its model's charts. Dragging over a chart zooms every chart
// to that span (an absolute range). Above them, the SLOs' budget-left and
// burn-rate gauges (GET /api/v1/slos) and the ingest health (GET
// /api/v1/health: events/s per protocol, dead letters by reason, queue,
// WAL and detection lag).

import { html, useState } from "/ui/vendor/htm-preact-standalone.mjs";
import {
  absoluteParams,
  api,
  Chart,
  chartWidth,
  describeGroup,
  formatNumber,
  href,
  REFRESH_MS,
  SEVERITY_ORDER,
  uPlot,
  updateRoute,
  useLoader,
  windowOf,
} from "/ui/lib.js";
import { modelLink } from "/ui/alerts.js";
import { SloGauges } from "/ui/rules.js";


// The x range every chart shows (Unix seconds): the range as of the last
// answer. Module state, because uPlot keeps the scale function it was made with.
let shownWindow = { from: 0, to: 1 };

// A uPlot plugin drawing each open alert's start on the chart as a dashed
// vertical line in its severity's colour: the chart's `markers`,
// [{ at (Unix seconds), severity }].
const SEVERITY_COLOUR = { critical: "#b42318", high: "#d92d20", medium: "#dc6803", low: "#1570ef", info: "#667085" };
export function alertMarkers() {
  return {
    hooks: {
      draw: (u) => {
        const { ctx } = u;
        const { top, height } = u.bbox;
        ctx.save();
        ctx.lineWidth = 2 * uPlot.pxRatio;
        ctx.setLineDash([6 * uPlot.pxRatio, 4 * uPlot.pxRatio]);
        for (const mark of u.markers || []) {
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

// Whether an alert's group names this model (and this version, when the
// group has one); an alert grouped by neither concerns every model.
export function alertConcerns(alert, modelId, modelVersion) {
  const group = alert.group || {};
  if ("model_id" in group && group.model_id !== modelId) return false;
  if ("model_version" in group && modelVersion !== undefined && group.model_version !== modelVersion) return false;
  return true;
}

export function isOpen(alert) {
  return alert.state === "firing" || alert.state === "pending";
}

async function load(token, range) {
  const { from, to } = windowOf(range);
  const width = chartWidth();
  const points = Math.min(100000, Math.max(2, 2 * width));
  // Every version's three charts from one scan of the rollups.
  const params = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), points });
  const [overview, alerts, slos, health] = await Promise.all([
    api(token, `/api/v1/series/overview?${params}`),
    api(token, "/api/v1/alerts"),
    api(token, "/api/v1/slos"),
    api(token, "/api/v1/health"),
  ]);
  const panels = overview.groups.map((group) => {
    const { model_id: modelId, model_version: modelVersion, count, error_rate: errors, latency } = group;
    const markers = alerts.alerts
      .filter(isOpen)
      .filter((alert) => alertConcerns(alert, modelId, modelVersion))
      .map((alert) => ({ at: Date.parse(alert.starts_at) / 1000, severity: alert.severity }))
      .filter((mark) => Number.isFinite(mark.at));
    return {
      key: `${modelId}/${modelVersion ?? ""}`,
      markers,
      modelId,
      modelVersion,
      events: group.events,
      width,
      volume: [count.timestamps, count.values],
      errors: [errors.timestamps, errors.values.map((v) => (v === null ? null : v * 100))],
      latency: [latency.timestamps, latency.series.p50, latency.series.p95, latency.series.p99],
    };
  });
  const open = alerts.alerts
    .filter(isOpen)
    .sort(
      (a, b) =>
        (a.state === "firing" ? 0 : 1) - (b.state === "firing" ? 0 : 1) ||
        SEVERITY_ORDER.indexOf(a.severity) - SEVERITY_ORDER.indexOf(b.severity) ||
        String(b.starts_at).localeCompare(String(a.starts_at)),
    );
  return { panels, alerts: open, detection: alerts.detection, slos: slos.slos, health, from, to };
}

// Options of a time chart over [from, to] (Unix seconds) whose y axis
// starts at `yMin`, with the alert markers.
function timeChart(yMin) {
  return {
    options: {
      scales: {
        x: { time: true, range: () => [shownWindow.from, shownWindow.to] },
        // Rates and latencies start at zero; an all-zero series shows 0-1.
        y: { range: (u, low, high) => [yMin, Math.max(high, yMin + 1) * 1.05] },
      },
    },
    plugins: [alertMarkers()],
  };
}

function zoomTo(min, max) {
  updateRoute(absoluteParams(min, max));
}

function ModelPanel({ panel, rangeParams }) {
  const name = panel.modelVersion === null ? panel.modelId : `${panel.modelId} ${panel.modelVersion}`;
  const chart = (id, title, data, series) => {
    const { options, plugins } = timeChart(0);
    return html`<${Chart} id=${`${panel.key}/${id}`} title=${title} data=${data} width=${panel.width}
      options=${options} plugins=${plugins} markers=${panel.markers} series=${series} onZoom=${zoomTo} />`;
  };
  return html`<section class="card model" data-model=${panel.key}>
    <h2><a href=${href(`/model/${encodeURIComponent(panel.modelId)}`, rangeParams)}>${name}</a>
      <span class="meta">${Number(panel.events).toLocaleString()} events in range</span></h2>
    <div class="charts">
      ${chart("volume", "Requests per minute", panel.volume, [{ label: "requests/min", stroke: "#1570ef", fill: "rgba(21,112,239,0.08)" }])}
      ${chart("errors", "Error rate (%)", panel.errors, [{ label: "errors %", stroke: "#d92d20" }])}
      ${chart("latency", "Latency (ms)", panel.latency, [
        { label: "p50", stroke: "#12b76a" },
        { label: "p95", stroke: "#f79009" },
        { label: "p99", stroke: "#d92d20" },
      ])}
    </div>
  </section>`;
}

function OpenAlerts({ alerts, detection }) {
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
            ${modelLink(alert) && html` · <a href=${modelLink(alert)}>model page at its time</a>`}
          </div>
        </li>`,
      )}
    </ul>`;
  return html`<section class="card" id="alerts"><h2><a href="#/alerts">Alerts</a></h2>${body}</section>`;
}

// Seconds between now and an RFC 3339 time, or null.
function secondsSince(text) {
  const at = Date.parse(text || "");
  return Number.isFinite(at) ? Math.max(0, (Date.now() - at) / 1000) : null;
}

function IngestHealth({ health }) {
  if (!health) return null;
  const protocols = Object.entries(health.ingest);
  const total = protocols.reduce((sum, [, p]) => sum + p.events_per_second, 0);
  const dead = Object.entries(health.dead_letters || {}).sort((a, b) => b[1] - a[1]);
  const clock = health.detection && health.detection.clock;
  const lag = secondsSince(clock);
  return html`<section class="card" id="ingest-health">
    <h2>Ingest health <span class="meta">${formatNumber(total, 1)} events/s in all · ${formatNumber(health.stored)} stored since start</span></h2>
    <div class="health">
      <table class="rates">
        <thead><tr><th>protocol</th><th>events/s</th><th>events</th></tr></thead>
        <tbody>${protocols.map(
          ([name, p]) => html`<tr key=${name} data-protocol=${name} data-rate=${String(p.events_per_second)}>
            <td>${name}</td><td>${formatNumber(p.events_per_second, 1)}</td><td>${formatNumber(p.events)}</td></tr>`,
        )}</tbody>
      </table>
      <table class="dead-letters">
        <thead><tr><th>dead letters by reason</th><th>lines</th></tr></thead>
        <tbody>${dead.length === 0
          ? html`<tr><td class="meta">none</td><td>0</td></tr>`
          : dead.map(([reason, count]) => html`<tr key=${reason}><td>${reason}</td><td>${formatNumber(count)}</td></tr>`)}</tbody>
      </table>
      <table class="lag">
        <thead><tr><th>lag</th><th></th></tr></thead>
        <tbody>
          <tr><td>store queue</td><td>${health.queue.depth} of ${health.queue.capacity} requests</td></tr>
          <tr><td>WAL not yet synced</td><td>${formatNumber(health.wal.unsynced_records)} records</td></tr>
          <tr><td>rows not yet in segments</td><td>${formatNumber(health.wal.buffered_rows)}</td></tr>
          <tr><td>detection clock behind now</td><td id="detection-lag">${lag === null ? "–" : `${formatNumber(lag, 1)} s`}</td></tr>
          <tr><td>refused / 429</td><td>${formatNumber(health.refused)} / ${formatNumber(health.busy)}</td></tr>
        </tbody>
      </table>
    </div>
  </section>`;
}

export function Overview({ token, range, rangeParams, onFailure, onLoaded }) {
  const [view, setView] = useState({ panels: null, alerts: null, detection: true });
  useLoader(
    () => load(token, range),
    `${token}|${range.key}`,
    range.absolute ? 0 : REFRESH_MS,
    (next) => {
      shownWindow = { from: next.from.getTime() / 1000, to: next.to.getTime() / 1000 };
      setView(next);
      onLoaded(next.to);
    },
    onFailure,
  );
  return html`<${OpenAlerts} alerts=${view.alerts} detection=${view.detection} />
    ${view.slos && view.slos.length > 0 && html`<section class="card" id="slo-gauges"><h2><a href="#/rules">SLOs</a></h2><${SloGauges} slos=${view.slos} /></section>`}
    ${view.panels !== null && view.panels.length === 0 && html`<section class="card empty">No events in this range.</section>`}
    ${(view.panels || []).map(
      (panel) => html`<${ModelPanel} key=${panel.key} panel=${panel} rangeParams=${rangeParams} />`,
    )}
    <${IngestHealth} health=${view.health} />`;
}
