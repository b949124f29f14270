// What every view of the dashboard shares: the REST client, the hash
// router, the time range and the uPlot chart component.

import { html, useEffect, useRef } from "/ui/vendor/htm-preact-standalone.mjs";
import uPlot from "/ui/vendor/uPlot.esm.js";

export { uPlot };

// The live uPlot instances by chart id, for tests and the console.
export const charts = new Map();
window.inferwatch = { charts, refreshes: 0 };

export const TOKEN_KEY = "inferwatch.token";
// The admin token acknowledging and silencing need; kept for the tab only.
export const ADMIN_TOKEN_KEY = "inferwatch.admin-token";
export const RANGE_KEY = "inferwatch.range";
// Views on a relative range reload this often.
export const REFRESH_MS = 5000;

export class Unauthorized extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export async function api(token, path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` },
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) {
    throw new Unauthorized(body.error || `the token was refused (${response.status})`, response.status);
  }
  if (!response.ok) {
    throw new Error(`${path.split("?")[0]}: ${response.status} ${body.error || ""}`);
  }
  return body;
}

export function query(token, sql, limit = 10000) {
  return api(token, "/api/v1/query", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sql, limit }),
  });
}

export function sqlString(text) {
  return `'${String(text).replaceAll("'", "''")}'`;
}

// ---- Routing: `#/path?params`, so every view can be linked and shared.

export function currentRoute() {
  const text = location.hash.replace(/^#/, "");
  const at = text.indexOf("?");
  const path = (at < 0 ? text : text.slice(0, at)) || "/";
  return { path, params: new URLSearchParams(at < 0 ? "" : text.slice(at + 1)) };
}

export function href(path, params) {
  const text = new URLSearchParams(params || {}).toString();
  return `#${path}${text ? `?${text}` : ""}`;
}

// Changes some parameters of the current route (null removes one).
export function updateRoute(changes, { replace = false } = {}) {
  const { path, params } = currentRoute();
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined) params.delete(key);
    else params.set(key, value);
  }
  const target = href(path, params);
  if (replace) history.replaceState(null, "", target);
  else location.hash = target;
  if (replace) window.dispatchEvent(new HashChangeEvent("hashchange"));
}

// ---- Time ranges: relative (`range=1h`, ending now at each refresh) or
// absolute (`from` and `to`, RFC 3339) in the route's parameters.

export const RELATIVE = { "15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600 };

export function rangeOf(params) {
  const from = Date.parse(params.get("from") || "");
  const to = Date.parse(params.get("to") || "");
  if (Number.isFinite(from) && Number.isFinite(to) && from < to) {
    return { absolute: true, from, to, key: `${from}/${to}` };
  }
  const saved = localStorage.getItem(RANGE_KEY);
  const name = params.get("range") in RELATIVE ? params.get("range") : saved in RELATIVE ? saved : "15m";
  return { absolute: false, name, key: name };
}

// The range's bounds now, as Dates.
export function windowOf(range) {
  if (range.absolute) return { from: new Date(range.from), to: new Date(range.to) };
  const to = new Date();
  return { from: new Date(to.getTime() - RELATIVE[range.name] * 1000), to };
}

// Route parameters selecting this absolute window (Unix seconds).
export function absoluteParams(fromSeconds, toSeconds) {
  return {
    from: new Date(fromSeconds * 1000).toISOString(),
    to: new Date(toSeconds * 1000).toISOString(),
    range: null,
  };
}

// ---- Charts.

// Pixels of one chart: `perRow` to a row on a wide window, fewer on a narrow one.
export function chartWidth(perRow = 3) {
  const usable = Math.max(320, window.innerWidth - 64);
  let fit = perRow;
  while (fit > 1 && usable < fit * 340) fit -= 1;
  return Math.floor((usable - (fit - 1) * 12) / fit) - 8;
}

// A uPlot chart, made once per `id` and given new data in place.
// `options` are uPlot's (series without the x entry go in `series`);
// `onZoom(min, max)`, when given, receives an x range dragged over the
// chart instead of uPlot zooming by itself; `markers` are kept on the
// uPlot instance (`u.markers`) for plugins that draw them.
export function Chart({ id, title, data, series, width, height = 180, options = {}, onZoom, plugins = [], markers = [] }) {
  const box = useRef(null);
  const mine = useRef(null);
  const zoom = useRef(onZoom);
  zoom.current = onZoom;
  useEffect(() => {
    let plot = charts.get(id);
    if (plot && plot.root.parentNode === box.current) {
      plot.markers = markers;
      if (plot.width !== width) plot.setSize({ width, height });
      plot.setData(data);
      return;
    }
    plot?.destroy();
    const select = {
      hooks: {
        setSelect: (u) => {
          if (!zoom.current || u.select.width < 3) return;
          const min = u.posToVal(u.select.left, "x");
          const max = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          zoom.current(min, max);
        },
      },
    };
    plot = new uPlot(
      {
        width,
        height,
        series: [{}, ...series.map((s) => ({ spanGaps: true, width: 1.5, ...s }))],
        axes: [{}, { size: 56 }],
        legend: { live: true },
        ...options,
        cursor: { drag: { x: true, y: false, setScale: !onZoom }, ...(options.cursor || {}) },
        plugins: [select, ...plugins],
      },
      data,
      box.current,
    );
    // Before uPlot's first draw, which it queues (a redraw() here would
    // fix an unranged x scale at null).
    plot.markers = markers;
    charts.set(id, plot);
    mine.current = plot;
  }, [data, width]);
  // Only this component's own chart: a successor may hold the id already.
  useEffect(
    () => () => {
      if (charts.get(id) === mine.current) charts.delete(id);
      mine.current?.destroy();
    },
    [],
  );
  return html`<div class="chart" data-chart=${id}>${title && html`<h3>${title}</h3>`}<div ref=${box}></div></div>`;
}

export const PALETTE = ["#1570ef", "#d92d20", "#12b76a", "#f79009", "#7a5af8", "#0e9384", "#c11574", "#667085"];

export const SEVERITY_ORDER = ["critical", "high", "medium", "low", "info"];

export function describeGroup(group) {
  if (group === null || group === undefined) return "";
  if (typeof group !== "object") return String(group);
  return Object.entries(group)
    .map(([key, value]) => `${key}=${value}`)
    .join(", ");
}

export function formatNumber(value, digits = 3) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  if (Number.isInteger(value)) return value.toLocaleString();
  const size = Math.abs(value);
  if (size !== 0 && (size < 1e-3 || size >= 1e6)) return value.toExponential(2);
  return value.toLocaleString(undefined, { maximumFractionDigits: digits });
}

// A load that reruns when `key` changes and every `refreshMs` (0: never),
// skipping a round while the last is still out. `apply(result)` is called
// with each answer; `fail(error)` with each failure.
export function useLoader(load, key, refreshMs, apply, fail) {
  useEffect(() => {
    let stopped = false;
    let busy = false;
    const tick = async () => {
      if (busy) return;
      busy = true;
      try {
        const result = await load();
        if (!stopped) apply(result);
      } catch (failure) {
        if (!stopped) fail(failure);
      } finally {
        busy = false;
      }
    };
    tick();
    const timer = refreshMs ? setInterval(tick, refreshMs) : null;
    return () => {
      stopped = true;
      if (timer) clearInterval(timer);
    };
  }, [key]);
}

// ---- Gauges: a half-circle dial (SVG) for one number between `min` and
// `max`; `zones` colour it, [[upTo, colour], ...] in rising order. Each
// gauge records what it drew in `window.inferwatch.gauges` (id -> value)
// and in its element's `data-value`.
export const gauges = new Map();
window.inferwatch.gauges = gauges;

export function Gauge({ id, label, value, min = 0, max = 100, unit = "", zones = [], digits = 1 }) {
  const known = value !== null && value !== undefined && Number.isFinite(value);
  const share = known ? Math.min(1, Math.max(0, (value - min) / (max - min))) : 0;
  const colour = known ? (zones.find(([upTo]) => value <= upTo) || zones[zones.length - 1] || [0, "#1570ef"])[1] : "#d0d5dd";
  // The arc from the left end (180°) clockwise over the top.
  const angle = Math.PI * (1 - share);
  const end = [50 + 40 * Math.cos(angle), 50 - 40 * Math.sin(angle)];
  useEffect(() => {
    if (known) gauges.set(id, value);
    else gauges.delete(id);
    return () => gauges.delete(id);
  }, [id, value]);
  const shown = known ? `${value.toLocaleString(undefined, { maximumFractionDigits: digits })}${unit}` : "–";
  return html`<figure class="gauge" data-gauge=${id} data-value=${known ? String(value) : ""}>
    <svg viewBox="0 0 100 58" width="150" height="87" role="img" aria-label=${`${label}: ${shown}`}>
      <path d="M 10 50 A 40 40 0 0 1 90 50" fill="none" stroke="#eaecf0" stroke-width="9" />
      ${known && share > 0 && html`<path class="value" d=${`M 10 50 A 40 40 0 0 1 ${end[0].toFixed(2)} ${end[1].toFixed(2)}`}
        fill="none" stroke=${colour} stroke-width="9" />`}
      <text x="50" y="48" text-anchor="middle" font-size="14" font-weight="600">${shown}</text>
    </svg>
    <figcaption>${label}</figcaption>
  </figure>`;
}
