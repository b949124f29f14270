// The SQL console: an editor (Ctrl+Enter runs), the result as a table and
// as a uPlot chart (the first column on x: times as time, numbers as
// numbers, anything else as the row's position; every other numeric column
// a series), up to 100 000 rows through POST /api/v1/query. The query that
// ran is kept in the URL (`#/sql?q=…`), so a link shares it.

import { html, useEffect, useRef, useState } from "/ui/vendor/htm-preact-standalone.mjs";
import { Chart, chartWidth, formatNumber, PALETTE, query, updateRoute } from "/ui/lib.js";

const MAX_ROWS = 100000;
const TABLE_ROWS = 200;
const EXAMPLE =
  "SELECT date_trunc('minute', timestamp) AS minute, count(*) AS requests,\n" +
  "       avg(latency_ms) AS mean_latency_ms\n" +
  "FROM inference\n" +
  "WHERE timestamp > now() - INTERVAL '1 hour'\n" +
  "GROUP BY 1 ORDER BY 1";

const NUMERIC = /^(Int|UInt|Float|Decimal)/;
const TIME = /^Timestamp|^Date/;

// The chart's data from a result: [x, ...series] as uPlot wants them, x
// ascending; null when no column can be drawn.
export function chartOf(result) {
  const { columns, rows } = result;
  if (rows.length === 0 || columns.length < 2) return null;
  const series = columns
    .map((column, index) => ({ ...column, index }))
    .slice(1)
    .filter((column) => NUMERIC.test(column.type));
  if (series.length === 0) return null;
  const first = columns[0];
  let kind = "index";
  if (TIME.test(first.type)) kind = "time";
  else if (NUMERIC.test(first.type)) kind = "number";
  const xOf = (row, position) => {
    if (kind === "time") return Date.parse(row[0]) / 1000;
    if (kind === "number") return row[0];
    return position;
  };
  let order = rows.map((row, position) => [xOf(row, position), position]).filter(([x]) => x !== null && Number.isFinite(x));
  // uPlot needs x ascending.
  if (order.some(([x], i) => i > 0 && x < order[i - 1][0])) order = order.slice().sort((a, b) => a[0] - b[0]);
  const xs = new Float64Array(order.length);
  order.forEach(([x], i) => (xs[i] = x));
  const data = [xs, ...series.map((column) => order.map(([, position]) => rows[position][column.index]))];
  return { kind, data, labels: series.map((column) => column.name), xName: first.name };
}

function ResultTable({ result }) {
  const shown = result.rows.slice(0, TABLE_ROWS);
  return html`<div class="table-scroll"><table class="result" id="sql-result">
    <thead><tr>${result.columns.map((column) => html`<th title=${column.type}>${column.name}</th>`)}</tr></thead>
    <tbody>
      ${shown.map(
        (row) => html`<tr>${row.map((value) => html`<td>${typeof value === "number" ? formatNumber(value, 6) : value === null ? "NULL" : String(value)}</td>`)}</tr>`,
      )}
    </tbody>
  </table></div>`;
}

export function SqlConsole({ token, params, onFailure, onLoaded }) {
  const shared = params.get("q");
  const [text, setText] = useState(shared || EXAMPLE);
  const [state, setState] = useState({ result: null, error: null, running: false, ran: 0 });
  const editor = useRef(null);

  const run = async (sql) => {
    setState((old) => ({ ...old, running: true, error: null }));
    const began = performance.now();
    try {
      const result = await query(token, sql, MAX_ROWS);
      setState((old) => ({ result, error: null, running: false, ran: old.ran + 1, millis: performance.now() - began }));
      onLoaded(new Date());
    } catch (failure) {
      if (failure.status === 401) onFailure(failure);
      else setState((old) => ({ ...old, error: failure.message, running: false }));
    }
  };
  // Run what the URL shares, once per distinct query.
  useEffect(() => {
    if (shared) {
      setText(shared);
      run(shared);
    }
  }, [shared]);

  const submit = () => {
    const sql = editor.current.value;
    if (sql.trim() === shared) run(sql.trim());
    else updateRoute({ q: sql.trim() });
  };
  const keys = (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
    }
  };
  const chart = state.result && chartOf(state.result);
  const width = chartWidth(1);
  return html`<section class="card" id="sql-console">
      <h2>SQL</h2>
      <textarea id="sql-editor" ref=${editor} rows="8" spellcheck="false" value=${text}
        onInput=${(event) => setText(event.target.value)} onKeyDown=${keys}></textarea>
      <div class="actions">
        <button type="button" id="sql-run" onClick=${submit} disabled=${state.running}>Run (Ctrl+Enter)</button>
        <span class="meta" id="sql-status">
          ${state.running ? "running…" : state.result
            ? `${state.result.rows.length.toLocaleString()} rows${state.result.truncated ? " (truncated)" : ""} in ${Math.round(state.millis)} ms`
            : "Tables: inference, inference_rollups, alerts, and every other stream."}
        </span>
      </div>
      ${state.error && html`<p class="error" id="sql-error">${state.error}</p>`}
    </section>
    ${chart &&
    html`<section class="card" id="sql-chart">
      <h2>Chart <span class="meta">x: ${chart.xName}${chart.kind === "index" ? " (row order)" : ""}; drag to zoom, double-click to reset</span></h2>
      <${Chart} key=${`${state.ran}`} id="sql/result" data=${chart.data} width=${width} height=${300}
        options=${{ scales: { x: { time: chart.kind === "time" } } }}
        series=${chart.labels.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], points: { show: chart.data[0].length < 200 } }))} />
    </section>`}
    ${state.result && html`<section class="card"><${ResultTable} result=${state.result} />
      ${state.result.rows.length > TABLE_ROWS && html`<p class="meta">The first ${TABLE_ROWS} rows of ${state.result.rows.length.toLocaleString()}.</p>`}</section>`}`;
}
