// Rules and SLOs: each running rule with its status (firing, pending, ok,
// or error when the rules directory no longer loads where it lives), last
// evaluation, firing groups and the validation errors (GET /api/v1/rules,
// GET /api/v1/rules/validation); each SLO with its objective, budget left
// and burn rates per group (GET /api/v1/slos); and the MITRE ATLAS matrix
// of the running rules (GET /api/v1/rules/coverage): one column per
// tactic, each technique coloured by how well the rules cover it.

import { html, useState } from "/ui/vendor/htm-preact-standalone.mjs";
import { api, describeGroup, formatNumber, Gauge, href, REFRESH_MS, useLoader } from "/ui/lib.js";

// A rule's status from its live state and the validation errors.
export function ruleStatus(rule, errors) {
  if (errors.some((message) => message.startsWith(rule.path))) return "error";
  if ((rule.firing || []).length > 0) return "firing";
  if (rule.pending > 0) return "pending";
  return "ok";
}

async function load(token) {
  const [rules, slos, validation, coverage] = await Promise.all([
    api(token, "/api/v1/rules"),
    api(token, "/api/v1/slos"),
    // Both answer 409 without rules; the page says so from `rules.detection`.
    api(token, "/api/v1/rules/validation").catch((failure) => ({ failed: failure.message })),
    api(token, "/api/v1/rules/coverage").catch((failure) => ({ failed: failure.message })),
  ]);
  return { rules, slos, validation, coverage, at: new Date() };
}

function RuleTable({ rules, validation }) {
  const errors = validation.errors || [];
  return html`<section class="card" id="rules">
    <h2>Rules <span class="meta">${rules.rules.length} running · detection clock ${rules.clock || "–"}</span></h2>
    ${validation.failed && html`<p class="error">Validation: ${validation.failed}</p>`}
    ${validation.valid === false &&
    html`<div class="validation error" id="validation-errors">
      <strong>${validation.path} no longer loads; a reload would be refused (the running rules stay):</strong>
      <ul>${errors.map((message) => html`<li>${message}</li>`)}</ul>
    </div>`}
    ${validation.valid === true && html`<p class="meta" id="validation-ok">${validation.path}: all ${validation.rules} rules load.</p>`}
    <div class="table-scroll">
      <table class="rules">
        <thead><tr><th>rule</th><th>status</th><th>severity</th><th>last evaluation</th><th>every / window</th><th>groups</th><th>firing groups</th><th>ATLAS</th></tr></thead>
        <tbody>
          ${rules.rules.map((rule) => {
            const status = ruleStatus(rule, errors);
            return html`<tr key=${rule.id} data-rule=${rule.id} data-status=${status}>
              <td><strong>${rule.id}</strong><div class="meta">${rule.title}</div></td>
              <td><span class=${`status-badge ${status}`}>${status}</span>${rule.pending > 0 && status !== "pending" ? html` <span class="meta">${rule.pending} pending</span>` : ""}</td>
              <td>${rule.severity}</td>
              <td>${rule.last_evaluation || html`<span class="meta">not yet</span>`}</td>
              <td>${formatNumber(rule.every_seconds)} s / ${formatNumber(rule.window_seconds)} s</td>
              <td>${rule.groups}</td>
              <td>${(rule.firing || []).length === 0
                ? html`<span class="meta">none</span>`
                : html`<ul class="plain">${rule.firing.slice(0, 5).map((group) => html`<li>${describeGroup(group)}</li>`)}
                    ${rule.firing.length > 5 && html`<li class="meta">and ${rule.firing.length - 5} more</li>`}</ul>`}
                ${(rule.firing || []).length > 0 && html`<div><a href=${href("/alerts", { state: "firing" })}>alerts</a></div>`}</td>
              <td>${(rule.atlas || []).join(", ")}</td>
            </tr>`;
          })}
        </tbody>
      </table>
    </div>
  </section>`;
}

function SloTable({ slos }) {
  if (slos.slos.length === 0) {
    return html`<section class="card" id="slos"><h2>SLOs</h2>
      <p class="empty">No SLOs on this node (start serve with --slos).</p></section>`;
  }
  return html`<section class="card" id="slos">
    <h2>SLOs <span class="meta">as of ${slos.clock || "–"}</span></h2>
    ${slos.slos.map(
      (slo) => html`<div class="slo" key=${slo.id} data-slo=${slo.id}>
        <h3>${slo.title} <span class="meta">${slo.id} · ${slo.sli} · objective ${slo.objective} % over ${formatNumber(slo.period_seconds / 86400)} d
          ${slo.firing && html` · <span class="error">burn-rate alert firing</span>`}</span></h3>
        ${slo.groups.length === 0
          ? html`<p class="empty">No evaluated boundary yet.</p>`
          : html`<table>
              <thead><tr><th>group</th><th>events</th><th>SLI</th><th>budget left</th>
                ${slo.groups[0].burn_rates.map((rate) => html`<th>burn ${rate.window}</th>`)}<th>firing</th></tr></thead>
              <tbody>${slo.groups.map(
                (group) => html`<tr>
                  <td>${describeGroup(group.group) || "all"}</td>
                  <td>${formatNumber(group.events)}</td>
                  <td>${group.sli_achieved === null ? "–" : `${formatNumber(group.sli_achieved, 3)} %`}</td>
                  <td class=${group.budget_remaining !== null && group.budget_remaining < 0 ? "error" : ""}>
                    ${group.budget_remaining === null ? "–" : `${formatNumber(group.budget_remaining, 1)} %`}</td>
                  ${group.burn_rates.map((rate) => html`<td>${formatNumber(rate.burn_rate, 2)}×</td>`)}
                  <td>${group.firing.join(", ") || html`<span class="meta">none</span>`}</td>
                </tr>`,
              )}</tbody>
            </table>`}
        <div class="meta">Alerts: ${slo.alerts.map((alert) => `${alert.windows} ≥ ${alert.burn_rate}× (${alert.severity})`).join("; ")}</div>
      </div>`,
    )}
  </section>`;
}

const STATUS_TEXT = { covered: "covered", partial: "partial", not_covered: "not covered" };

function AtlasMatrix({ coverage }) {
  const [chosen, choose] = useState(null);
  if (coverage.failed) {
    return html`<section class="card" id="atlas"><h2>MITRE ATLAS coverage</h2><p class="empty">${coverage.failed}</p></section>`;
  }
  const tactics = coverage.tactics.filter((tactic) =>
    coverage.techniques.some((technique) => technique.tactics.some((t) => t.id === tactic.id)),
  );
  const picked = coverage.techniques.find((technique) => technique.id === chosen);
  return html`<section class="card" id="atlas">
    <h2>MITRE ATLAS coverage <span class="meta">${coverage.summary.covered} covered · ${coverage.summary.partial} partial · ${coverage.summary.not_covered} not covered, of the techniques inference logs can show (fixtures ${coverage.evidence}, not run)</span></h2>
    <div class="atlas-matrix">
      ${tactics.map(
        (tactic) => html`<div class="tactic" key=${tactic.id}>
          <h3 title=${tactic.id}>${tactic.name}</h3>
          ${coverage.techniques
            .filter((technique) => technique.tactics.some((t) => t.id === tactic.id))
            .map(
              (technique) => html`<button type="button" class=${`technique ${technique.status}`} data-technique=${technique.id}
                  data-status=${technique.status} title=${`${technique.id}: ${STATUS_TEXT[technique.status]}${technique.rules.length ? ` by ${technique.rules.join(", ")}` : ""}`}
                  onClick=${() => choose(technique.id === chosen ? null : technique.id)}>
                <span class="id">${technique.id}</span> ${technique.name}
              </button>`,
            )}
        </div>`,
      )}
    </div>
    ${picked &&
    html`<div class="technique-detail" id="technique-detail">
      <strong>${picked.id} ${picked.name}</strong>: ${STATUS_TEXT[picked.status]}${picked.rules.length ? ` by ${picked.rules.join(", ")}` : ""}.
      <div class="meta">In inference logs: ${picked.indicator}</div>
    </div>`}
    ${coverage.outside_catalogue.length > 0 &&
    html`<p class="meta">Tags outside the catalogue: ${coverage.outside_catalogue.map((o) => `${o.id} (${o.rules.join(", ")})`).join("; ")}</p>`}
  </section>`;
}

// The SLOs' gauges: budget left and the fastest burn rate, per SLO.
export function SloGauges({ slos }) {
  if (!slos || slos.length === 0) return null;
  return html`<div class="gauges">
    ${slos.map(
      (slo) => html`<div class="gauge-pair" key=${slo.id} title=${`${slo.title} (${slo.sli}, objective ${slo.objective} %)`}>
        <${Gauge} id=${`${slo.id}/budget`} label=${`${slo.id}: budget left`} value=${slo.budget_remaining} min=${0} max=${100} unit=" %"
          zones=${[[10, "#d92d20"], [50, "#f79009"], [100, "#12b76a"]]} />
        <${Gauge} id=${`${slo.id}/burn`} label=${`${slo.id}: burn rate`} value=${slo.max_burn_rate} min=${0} max=${20} unit="×" digits=${2}
          zones=${[[1, "#12b76a"], [6, "#f79009"], [Infinity, "#d92d20"]]} />
      </div>`,
    )}
  </div>`;
}

export function RulesView({ token, onFailure, onLoaded }) {
  const [view, setView] = useState(null);
  useLoader(
    () => load(token),
    token,
    REFRESH_MS,
    (next) => {
      setView(next);
      onLoaded(next.at);
    },
    onFailure,
  );
  if (view === null) return html`<section class="card empty">Loading…</section>`;
  if (!view.rules.detection) {
    return html`<section class="card empty" id="rules">No rules run on this node (start serve with --rules).</section>`;
  }
  return html`<${RuleTable} rules=${view.rules} validation=${view.validation} />
    ${view.slos.slos.length > 0 && html`<section class="card"><h2>SLO budgets</h2><${SloGauges} slos=${view.slos.slos} /></section>`}
    <${SloTable} slos=${view.slos} />
    <${AtlasMatrix} coverage=${view.coverage} />`;
}
