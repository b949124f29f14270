// A model's page (#/model/MODEL_ID): over the chosen range, its confidence
// histogram and per-class probability distributions per version, input
// tokens against latency, and a comparison of two segments side by side
// (one data source against the rest, the canary against the baseline,
// this hour against the same hour yesterday) from GET /api/v1/compare,
// which computes KS, PSI, JS and Wasserstein on the server with the drift
// detector's own statistics. The comparison's choices live in the URL
// (`column`, `segment`, `against`), so an alert links straight to it.

import { html, useState } from "/ui/vendor/htm-preact-standalone.mjs";
import {
  api,
  Chart,
  chartWidth,
  formatNumber,
  href,
  PALETTE,
  query,
  sqlString,
  uPlot,
  updateRoute,
  useLoader,
  windowOf,
} from "/ui/lib.js";

const CONFIDENCE_BINS = 20;
const CLASS_BINS = 10;
const MAX_CLASSES = 8;
const SCATTER_POINTS = 5000;
const COLUMNS = ["confidence", "entropy", "margin", "latency_ms", "ttft_ms", "input_tokens", "output_tokens"];
// The source-confidence-drift rule's gate: a segment this far apart fires.
const APART_D = 0.2;
const APART_P = 0.001;

function rowsFilter(modelId, from, to) {
  return (
    `model_id = ${sqlString(modelId)} AND timestamp >= ${sqlString(from.toISOString())} ` +
    `AND timestamp < ${sqlString(to.toISOString())}`
  );
}

// Shares per version of `rows` [version, bin, count] over `bins` equal
// bins of [0, 1]: one array of shares per version.
function histogramData(rows, bins) {
  const versions = [...new Set(rows.map(([version]) => version ?? "(none)"))].sort();
  const counts = new Map(versions.map((version) => [version, new Array(bins).fill(0)]));
  for (const [version, bin, count] of rows) {
    const index = Math.min(bins - 1, Math.max(0, Number(bin)));
    counts.get(version ?? "(none)")[index] += Number(count);
  }
  const series = versions.map((version) => {
    const values = counts.get(version);
    const total = values.reduce((a, b) => a + b, 0) || 1;
    return values.map((count) => count / total);
  });
  return { versions, shares: series };
}

async function loadDistributions(token, modelId, range) {
  const { from, to } = windowOf(range);
  const where = rowsFilter(modelId, from, to);
  const [versions, confidence, classes, sources] = await Promise.all([
    query(token, `SELECT model_version, count(*) AS events FROM inference WHERE ${where} GROUP BY 1 ORDER BY 1`),
    query(
      token,
      `SELECT model_version, least(CAST(floor(confidence * ${CONFIDENCE_BINS}) AS BIGINT), ${CONFIDENCE_BINS - 1}) AS bin, count(*) AS n ` +
        `FROM inference WHERE ${where} AND confidence IS NOT NULL GROUP BY 1, 2`,
    ),
    query(token, `SELECT max(array_length(probabilities)) AS classes FROM inference WHERE ${where}`),
    query(token, `SELECT source_id, count(*) AS events FROM inference WHERE ${where} AND source_id IS NOT NULL GROUP BY 1 ORDER BY 1`, 1000),
  ]);
  const classCount = Math.min(MAX_CLASSES, Number(classes.rows[0]?.[0] || 0));
  const perClass = await Promise.all(
    Array.from({ length: classCount }, (_, k) =>
      query(
        token,
        `SELECT model_version, least(CAST(floor(probabilities[${k + 1}] * ${CLASS_BINS}) AS BIGINT), ${CLASS_BINS - 1}) AS bin, count(*) AS n ` +
          `FROM inference WHERE ${where} AND probabilities IS NOT NULL GROUP BY 1, 2`,
      ),
    ),
  );
  const events = versions.rows.reduce((sum, [, count]) => sum + Number(count), 0);
  // A uniform sample of about SCATTER_POINTS rows.
  const keep = Math.min(1, SCATTER_POINTS / Math.max(1, events));
  const scatter = await query(
    token,
    `SELECT input_tokens, latency_ms, model_version FROM inference WHERE ${where} ` +
      `AND input_tokens IS NOT NULL AND latency_ms IS NOT NULL${keep < 1 ? ` AND random() < ${keep}` : ""}`,
    SCATTER_POINTS * 2,
  );
  return {
    from,
    to,
    versions: versions.rows,
    events,
    sources: sources.rows.map(([source]) => source),
    confidence: confidence.rows.length ? histogramData(confidence.rows, CONFIDENCE_BINS) : null,
    classes: perClass.map((result) => histogramData(result.rows, CLASS_BINS)),
    scatter: scatterData(scatter.rows),
  };
}

// Points [input_tokens, latency_ms, version] as uPlot data: x ascending,
// one series per version with nulls where another version's point is.
function scatterData(rows) {
  if (rows.length === 0) return null;
  const versions = [...new Set(rows.map(([, , version]) => version ?? "(none)"))].sort();
  const tables = versions.map((version) => {
    const points = rows.filter(([, , v]) => (v ?? "(none)") === version).sort((a, b) => a[0] - b[0]);
    return [points.map(([x]) => x), points.map(([, y]) => y)];
  });
  return { versions, data: uPlot.join(tables) };
}

const points = (stroke) => ({
  stroke,
  paths: () => null,
  points: { show: true, size: 4, stroke, fill: stroke },
});

// Bars as uPlot steps: each bin's share from its left edge to the next
// (`edges` has one more entry than each series; the last share repeats to
// close the last bin).
function steps(edges, series) {
  return [edges, ...series.map((shares) => [...shares, shares[shares.length - 1]])];
}

function histogramSeries(versions) {
  return versions.map((version, i) => ({
    label: version,
    stroke: PALETTE[i % PALETTE.length],
    paths: uPlot.paths.stepped({ align: 1 }),
    points: { show: false },
    width: 2,
  }));
}

const SHARE_AXES = [{ label: "value" }, { size: 56, label: "share", values: (u, ticks) => ticks.map((t) => `${Math.round(t * 1000) / 10}%`) }];

function Distributions({ result }) {
  const width = chartWidth(2);
  const narrow = chartWidth(4);
  const asSteps = (histogram, bins) => steps(Array.from({ length: bins + 1 }, (_, i) => i / bins), histogram.shares);
  return html`<section class="card" id="distributions">
      <h2>Confidence by version <span class="meta">share of each version's events per bin</span></h2>
      ${result.confidence
        ? html`<${Chart} id="model/confidence" data=${asSteps(result.confidence, CONFIDENCE_BINS)} width=${width}
            options=${{ scales: { x: { time: false, range: [0, 1] } }, axes: SHARE_AXES }}
            series=${histogramSeries(result.confidence.versions)} />`
        : html`<p class="empty">This model logs no confidence in this range.</p>`}
    </section>
    <section class="card" id="class-distributions">
      <h2>Class probabilities by version</h2>
      ${result.classes.length === 0
        ? html`<p class="empty">This model logs no class probabilities in this range.</p>`
        : html`<div class="charts">
            ${result.classes.map(
              (histogram, k) => html`<${Chart} id=${`model/class-${k}`} title=${`class ${k}`} data=${asSteps(histogram, CLASS_BINS)}
                width=${narrow} height=${150} options=${{ scales: { x: { time: false, range: [0, 1] } }, axes: SHARE_AXES }}
                series=${histogramSeries(histogram.versions)} />`,
            )}
          </div>`}
    </section>
    <section class="card" id="tokens-latency">
      <h2>Input tokens against latency <span class="meta">a sample of up to ${SCATTER_POINTS.toLocaleString()} events</span></h2>
      ${result.scatter
        ? html`<${Chart} id="model/tokens-latency" data=${result.scatter.data} width=${width} height=${260}
            options=${{ scales: { x: { time: false } }, axes: [{ label: "input tokens" }, { size: 56, label: "latency ms" }] }}
            series=${result.scatter.versions.map((version, i) => ({ label: version, ...points(PALETTE[i % PALETTE.length]) }))} />`
        : html`<p class="empty">No events with input tokens and latency in this range.</p>`}
    </section>`;
}

function StatisticsTable({ comparison }) {
  const statistics = comparison.statistics;
  if (!statistics) return html`<p class="empty" id="compare-empty">One side has no values in this range: nothing to compare.</p>`;
  const { ks, psi, js, wasserstein } = statistics;
  const apart = ks.statistic >= APART_D && ks.p_value <= APART_P;
  const topBins = psi.bins
    .map((bin) => bin)
    .sort((a, b) => b.contribution - a.contribution)
    .slice(0, 3);
  const bounds = (bin) => `(${bin.above === null ? "−∞" : formatNumber(bin.above, 4)}, ${bin.up_to === null || bin.up_to === undefined ? "∞" : formatNumber(bin.up_to, 4)}]`;
  return html`<p id="compare-verdict" class=${apart ? "verdict apart" : "verdict alike"} data-apart=${apart ? "true" : "false"}>
      ${apart
        ? `${comparison.segment.label} stands apart from ${comparison.against.label} (KS D ≥ ${APART_D}, p ≤ ${APART_P}).`
        : `${comparison.segment.label} is not apart from ${comparison.against.label} by the drift rule's gate (KS D ≥ ${APART_D}, p ≤ ${APART_P}).`}
    </p>
    <table class="statistics" id="compare-statistics">
      <thead><tr><th>statistic</th><th>value</th><th>evidence</th></tr></thead>
      <tbody>
        <tr><td>Kolmogorov–Smirnov D</td><td data-statistic="ks">${formatNumber(ks.statistic, 4)}</td>
          <td>${`p = ${formatNumber(ks.p_value, 4)}; the CDFs are furthest apart at ${formatNumber(ks.at, 4)}, ` +
            `with ${formatNumber(ks.segment_cdf * 100, 1)} % of the segment at or below it against ${formatNumber(ks.against_cdf * 100, 1)} % ` +
            `(${ks.samples[0]} / ${ks.samples[1]} values)`}</td></tr>
        <tr><td>PSI</td><td data-statistic="psi">${formatNumber(psi.value, 4)}</td>
          <td>most from ${topBins
            .map((bin) => `${bounds(bin)}: ${formatNumber(bin.segment_share * 100, 1)} % vs ${formatNumber(bin.against_share * 100, 1)} %`)
            .join("; ")}</td></tr>
        <tr><td>Jensen–Shannon distance</td><td data-statistic="js">${formatNumber(js.distance, 4)}</td>
          <td>over the same ${js.bins} bins (quantiles of ${comparison.against.label})</td></tr>
        <tr><td>Wasserstein-1</td><td data-statistic="wasserstein">${formatNumber(wasserstein.distance, 4)}</td>
          <td>mean shift ${formatNumber(wasserstein.mean_shift, 4)}, median shift ${formatNumber(wasserstein.median_shift, 4)}</td></tr>
      </tbody>
    </table>`;
}

function SideSummary({ side }) {
  return html`<div class="side">
    <b>${side.label}</b>${side.truncated ? " (first 200 000 values)" : ""}
    <span>${formatNumber(side.count)} values</span>
    <span>mean ${formatNumber(side.mean, 4)}</span>
    <span>p10 ${formatNumber(side.p10, 4)} · p50 ${formatNumber(side.p50, 4)} · p90 ${formatNumber(side.p90, 4)}</span>
    <span class="meta">${side.from} → ${side.to}</span>
  </div>`;
}

function Comparison({ token, modelId, range, params, sources, onFailure }) {
  const column = COLUMNS.includes(params.get("column")) ? params.get("column") : "confidence";
  const segment = params.get("segment") || "";
  const against = params.get("against") || (segment ? "rest" : "shift:24h");
  const [result, setResult] = useState({ comparison: null, error: null });
  useLoader(
    async () => {
      const { from, to } = windowOf(range);
      const ask = new URLSearchParams({ column, model: modelId, against, from: from.toISOString(), to: to.toISOString() });
      if (segment) ask.set("segment", segment);
      return api(token, `/api/v1/compare?${ask}`);
    },
    `${token}|${modelId}|${range.key}|${column}|${segment}|${against}`,
    0,
    (comparison) => setResult({ comparison, error: null }),
    (failure) => (failure.status === 401 ? onFailure(failure) : setResult({ comparison: null, error: failure.message })),
  );
  const choose = (event) => {
    event.preventDefault();
    const form = event.target.elements;
    updateRoute({ column: form.column.value, segment: form.segment.value.trim() || null, against: form.against.value.trim() || null });
  };
  const thisHour = () => {
    const to = new Date();
    updateRoute({ segment: null, against: "shift:24h", from: new Date(to - 3600 * 1000).toISOString(), to: to.toISOString(), range: null });
  };
  const comparison = result.comparison;
  const width = chartWidth(2);
  let chart = null;
  if (comparison?.histogram) {
    const { edges, segment: mine, against: theirs } = comparison.histogram;
    chart = html`<${Chart} key=${`${column}|${segment}|${against}`} id="model/compare" width=${width} height=${240}
      data=${steps(edges, [mine, theirs])}
      options=${{ scales: { x: { time: false } }, axes: [{ label: column }, SHARE_AXES[1]] }}
      series=${[
        { label: comparison.segment.label, stroke: "#d92d20", fill: "rgba(217,45,32,0.12)", paths: uPlot.paths.stepped({ align: 1 }), points: { show: false }, width: 2 },
        { label: comparison.against.label, stroke: "#1570ef", fill: "rgba(21,112,239,0.10)", paths: uPlot.paths.stepped({ align: 1 }), points: { show: false }, width: 2 },
      ]} />`;
  }
  return html`<section class="card" id="comparison">
    <h2>Segment comparison</h2>
    <form class="compare-form" onSubmit=${choose} key=${`${column}|${segment}|${against}`}>
      <label>Column <select name="column">${COLUMNS.map((name) => html`<option value=${name} selected=${name === column}>${name}</option>`)}</select></label>
      <label>Segment <input name="segment" id="compare-segment" value=${segment} placeholder="source_id=src-07 (empty: all)" /></label>
      <label>Against <input name="against" id="compare-against" value=${against} placeholder="rest | ab_group=baseline | shift:24h" /></label>
      <button type="submit">Compare</button>
    </form>
    <div class="presets">
      <span class="meta">One source against the rest:</span>
      ${sources.map(
        (source) => html`<a href=${href(`/model/${encodeURIComponent(modelId)}`, withParams(params, { segment: `source_id=${source}`, against: "rest" }))}
          class=${segment === `source_id=${source}` ? "current" : ""} data-source=${source}>${source}</a>`,
      )}
      <a href=${href(`/model/${encodeURIComponent(modelId)}`, withParams(params, { segment: "ab_group=canary", against: "ab_group=baseline" }))}>canary against baseline</a>
      <button type="button" onClick=${thisHour}>this hour against the same hour yesterday</button>
    </div>
    ${result.error && html`<p class="error">${result.error}</p>`}
    ${comparison &&
    html`<div class="sides"><${SideSummary} side=${comparison.segment} /><${SideSummary} side=${comparison.against} /></div>
      <div class="compare-body">${chart}<div><${StatisticsTable} comparison=${comparison} /></div></div>`}
    <${SourceScan} key=${`${range.key}|${column}`} token=${token} modelId=${modelId} range=${range} column=${column} sources=${sources} onFailure=${onFailure} />
  </section>`;
}

// Every source of the model against the rest of its sources, one
// GET /api/v1/compare each (1,000 values a side for KS), sorted by KS D:
// a poisoned source heads the list, apart from the others.
function SourceScan({ token, modelId, range, column, sources, onFailure }) {
  const [scan, setScan] = useState({ rows: null, running: false, error: null });
  const run = async () => {
    setScan({ rows: null, running: true, error: null });
    const { from, to } = windowOf(range);
    const compareOne = async (source) => {
      const ask = new URLSearchParams({
        column,
        model: modelId,
        segment: `source_id=${source}`,
        against: "rest",
        from: from.toISOString(),
        to: to.toISOString(),
        samples: "1000",
      });
      const answer = await api(token, `/api/v1/compare?${ask}`);
      const statistics = answer.statistics;
      return {
        source,
        count: answer.segment.count,
        d: statistics?.ks.statistic ?? null,
        p: statistics?.ks.p_value ?? null,
        psi: statistics?.psi.value ?? null,
        js: statistics?.js.distance ?? null,
        shift: statistics?.wasserstein.mean_shift ?? null,
      };
    };
    try {
      const rows = [];
      // Four at a time: enough to be quick, few enough to leave the node room.
      for (let at = 0; at < sources.length; at += 4) {
        rows.push(...(await Promise.all(sources.slice(at, at + 4).map(compareOne))));
      }
      rows.sort((a, b) => (b.d ?? -1) - (a.d ?? -1));
      setScan({ rows, running: false, error: null });
    } catch (failure) {
      if (failure.status === 401) onFailure(failure);
      setScan({ rows: null, running: false, error: failure.message });
    }
  };
  return html`<div class="source-scan" id="source-scan">
    <button type="button" id="scan-sources" onClick=${run} disabled=${scan.running || sources.length === 0}>
      ${scan.running ? "comparing…" : `Compare every source against the rest (${column})`}</button>
    ${scan.error && html`<p class="error">${scan.error}</p>`}
    ${scan.rows &&
    html`<table class="statistics">
      <thead><tr><th>source</th><th>values</th><th>KS D</th><th>p</th><th>PSI</th><th>JS</th><th>mean shift</th></tr></thead>
      <tbody>
        ${scan.rows.map((row) => {
          const apart = row.d !== null && row.d >= APART_D && row.p <= APART_P;
          return html`<tr data-source-row=${row.source} data-apart=${apart ? "true" : "false"} class=${apart ? "apart" : ""}>
            <td><a href=${href(`/model/${encodeURIComponent(modelId)}`, withParams(new URLSearchParams(location.hash.split("?")[1] || ""), { segment: `source_id=${row.source}`, against: "rest" }))}>${row.source}</a></td>
            <td>${formatNumber(row.count)}</td><td>${formatNumber(row.d, 4)}</td><td>${formatNumber(row.p, 4)}</td>
            <td>${formatNumber(row.psi, 4)}</td><td>${formatNumber(row.js, 4)}</td><td>${formatNumber(row.shift, 4)}</td>
          </tr>`;
        })}
      </tbody>
    </table>`}
  </div>`;
}

function withParams(params, changes) {
  const next = new URLSearchParams(params);
  for (const [key, value] of Object.entries(changes)) next.set(key, value);
  return next;
}

export function ModelPage({ token, modelId, range, params, onFailure, onLoaded }) {
  const [result, setResult] = useState(null);
  useLoader(
    () => loadDistributions(token, modelId, range),
    `${token}|${modelId}|${range.key}`,
    0,
    (next) => {
      setResult(next);
      onLoaded(new Date());
    },
    onFailure,
  );
  return html`<section class="card" id="model-head">
      <h2>Model ${modelId}</h2>
      ${result &&
      html`<p class="meta">${formatNumber(result.events)} events from ${result.from.toISOString()} to ${result.to.toISOString()};
        versions ${result.versions.map(([version, count]) => `${version ?? "(none)"} (${formatNumber(Number(count))})`).join(", ")}</p>`}
    </section>
    <${Comparison} token=${token} modelId=${modelId} range=${range} params=${params} sources=${result?.sources || []} onFailure=${onFailure} />
    ${result ? html`<${Distributions} result=${result} />` : html`<section class="card empty">Loading…</section>`}`;
}

// #/model: every model with events in the range.
export function ModelIndex({ token, range, rangeParams, onFailure, onLoaded }) {
  const [models, setModels] = useState(null);
  useLoader(
    async () => {
      const { from, to } = windowOf(range);
      return query(
        token,
        `SELECT model_id, count(DISTINCT model_version) AS versions, sum(count) AS events FROM inference_rollups ` +
          `WHERE minute >= ${sqlString(from.toISOString())} AND minute < ${sqlString(to.toISOString())} GROUP BY 1 ORDER BY 1`,
      );
    },
    `${token}|${range.key}`,
    0,
    (result) => {
      setModels(result.rows);
      onLoaded(new Date());
    },
    onFailure,
  );
  return html`<section class="card" id="model-index"><h2>Models</h2>
    ${models === null
      ? html`<p class="empty">Loading…</p>`
      : models.length === 0
        ? html`<p class="empty">No events in this range.</p>`
        : html`<ul>${models.map(
            ([modelId, versions, events]) => html`<li><a href=${href(`/model/${encodeURIComponent(modelId)}`, rangeParams)}>${modelId}</a>
              <span class="meta">${formatNumber(Number(events))} events, ${versions} versions</span></li>`,
          )}</ul>`}
  </section>`;
}
