// Alerts: firing, pending and resolved alerts from GET /api/v1/alerts with
// their impact, one-line summary, explanation (contributing dimensions
// with lift) and evidence; acknowledging (POST /api/v1/alerts/{fingerprint}/ack),
// silencing with matchers and a duration (POST /api/v1/silences) and
// unsilencing (DELETE /api/v1/silences/{id}). Those three need an admin
// token: when the read token is refused, the page asks for one and keeps
// it for this tab only (sessionStorage). Below, the notification history
// (GET /api/v1/notifications): what was sent, and what was held back and why.

import { html, useState } from "/ui/vendor/htm-preact-standalone.mjs";
import {
  ADMIN_TOKEN_KEY,
  api,
  describeGroup,
  formatNumber,
  href,
  REFRESH_MS,
  SEVERITY_ORDER,
  Unauthorized,
  updateRoute,
  useLoader,
} from "/ui/lib.js";

const STATES = ["all", "firing", "pending", "resolved"];
const DURATIONS = ["30m", "1h", "2h", "4h", "12h", "24h", "7d"];
const STATE_ORDER = { firing: 0, pending: 1, resolved: 2 };
const HISTORY_ROWS = 50;
// Group keys that name where an alert happened rather than a segment of it.
const MODEL_KEYS = ["model_id", "model_version"];
// When the rule's window is unknown.
const DEFAULT_WINDOW_SECONDS = 15 * 60;

// The labels a silence can match, as the server builds them
// (alert_label_set): rule labels, group keys, severity and alertname.
function labelsOf(alert) {
  return { ...(alert.labels || {}), ...(alert.group || {}), severity: alert.severity, alertname: alert.rule_id };
}

function matcherText(name, value) {
  return `${name}=${JSON.stringify(String(value))}`;
}

// The model page at the alert's time, comparing the alert's segment (a
// source, a client, an A/B group) with the rest of the model's traffic:
// from one rule window before the alert started (what the rule judged
// first) to its end, or now while it is open.
export function modelLink(alert, windowSeconds) {
  const group = alert.group || {};
  if (!group.model_id) return null;
  const start = Date.parse(alert.starts_at);
  if (!Number.isFinite(start)) return null;
  const end = Date.parse(alert.ends_at || "");
  const params = {
    from: new Date(start - (windowSeconds || DEFAULT_WINDOW_SECONDS) * 1000).toISOString(),
    to: new Date(Number.isFinite(end) ? end : Math.max(Date.now(), start + 60 * 1000)).toISOString(),
  };
  const segment = Object.entries(group).find(([key]) => !MODEL_KEYS.includes(key));
  if (segment) {
    params.segment = `${segment[0]}=${segment[1]}`;
    params.against = "rest";
  }
  if (alert.evidence?.subject && /^[A-Za-z0-9_]+$/.test(alert.evidence.subject)) params.column = alert.evidence.subject;
  return href(`/model/${encodeURIComponent(group.model_id)}`, params);
}

function Impact({ impact }) {
  if (!impact) return null;
  return html`<div class="impact">
    <span><b>${formatNumber(impact.events)}</b> events</span>
    <span><b>${formatNumber((impact.share_of_traffic || 0) * 100, 1)} %</b> of traffic</span>
    ${impact.distinct_clients !== null && impact.distinct_clients !== undefined &&
    html`<span><b>${formatNumber(impact.distinct_clients)}</b> clients</span>`}
  </div>`;
}

function Explanation({ explanation }) {
  if (!explanation || explanation.length === 0) return null;
  return html`<table class="explanation">
    <thead><tr><th>dimension</th><th>value</th><th>lift</th><th>share</th></tr></thead>
    <tbody>
      ${explanation.map(
        (item) => html`<tr>
          <td>${item.dimension}</td><td>${item.value}</td><td>${formatNumber(item.lift, 2)}</td>
          <td>${item.share === undefined ? "–" : `${formatNumber(item.share * 100, 1)} %`}</td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}

function Evidence({ evidence }) {
  if (!evidence) return null;
  const { detector, method, subject, ...measured } = evidence;
  return html`<div class="evidence">
    <span class="what">${detector} · ${method} · ${subject}</span>
    ${Object.entries(measured).map(
      ([key, value]) =>
        html`<span><i>${key}</i> ${Array.isArray(value) ? value.map((v) => formatNumber(v, 4)).join(" – ") : typeof value === "number" ? formatNumber(value, 4) : String(value)}</span>`,
    )}
  </div>`;
}

function SilenceForm({ alert, onCreate, onCancel }) {
  const labels = labelsOf(alert);
  const initial = [matcherText("alertname", alert.rule_id), ...Object.entries(alert.group || {}).map(([k, v]) => matcherText(k, v))];
  const submit = (event) => {
    event.preventDefault();
    const form = event.target.elements;
    const matchers = form.matchers.value
      .split("\n")
      .map((line) => line.trim())
      .filter(Boolean);
    onCreate({ matchers, duration: form.duration.value, comment: form.comment.value.trim() || undefined });
  };
  return html`<form class="silence-form" onSubmit=${submit}>
    <label>Matchers, one a line (<code>name=value</code>, <code>!=</code>, <code>=~</code>, <code>!~</code>); labels:
      <span class="meta">${Object.keys(labels).join(", ")}</span>
      <textarea name="matchers" rows=${initial.length + 1}>${initial.join("\n")}</textarea></label>
    <label>For <select name="duration">${DURATIONS.map((d) => html`<option value=${d} selected=${d === "2h"}>${d}</option>`)}</select></label>
    <label>Comment <input name="comment" type="text" /></label>
    <button type="submit" class="create-silence">Create silence</button>
    <button type="button" onClick=${onCancel}>Cancel</button>
  </form>`;
}

function AlertCard({ alert, act, windowSeconds }) {
  const [silencing, setSilencing] = useState(false);
  const link = modelLink(alert, windowSeconds);
  const open = alert.state === "firing" || alert.state === "pending";
  const acknowledge = () => act(`/api/v1/alerts/${encodeURIComponent(alert.fingerprint)}/ack`, { method: "POST", body: "{}" });
  const silence = (body) =>
    act("/api/v1/silences", { method: "POST", body: JSON.stringify(body) }).then((done) => done && setSilencing(false));
  return html`<li class=${`alert ${alert.severity} ${alert.state}`} data-alert=${alert.alert_id} data-rule=${alert.rule_id}>
    <div class="head">
      <span class="state">${alert.state}</span><strong>${alert.title}</strong>
      <span class="badge">${alert.severity}</span>
      ${alert.acknowledged && html`<span class="badge acknowledged">acknowledged</span>`}
      ${alert.silenced && html`<span class="badge silenced">silenced</span>`}
    </div>
    <div class="summary">${alert.summary || `${alert.condition} (value ${alert.value})`}</div>
    <div class="meta">
      ${alert.rule_id} · ${describeGroup(alert.group)} · ${alert.starts_at}${alert.ends_at ? ` → ${alert.ends_at}` : ""}${" · "}<code>${alert.condition}</code> value ${formatNumber(alert.value, 4)}${alert.threshold !== null && alert.threshold !== undefined ? ` (threshold ${formatNumber(alert.threshold, 4)})` : ""}
      ${alert.atlas?.length ? ` · ATLAS ${alert.atlas.join(", ")}` : ""}
    </div>
    <${Impact} impact=${alert.impact} />
    <${Explanation} explanation=${alert.explanation} />
    <${Evidence} evidence=${alert.evidence} />
    <div class="actions">
      ${open && !alert.acknowledged && html`<button type="button" class="ack" onClick=${acknowledge}>Acknowledge</button>`}
      ${!silencing && html`<button type="button" class="silence" onClick=${() => setSilencing(true)}>Silence…</button>`}
      ${link && html`<a class="model-link" href=${link}>Model page at its time</a>`}
    </div>
    ${silencing && html`<${SilenceForm} alert=${alert} onCreate=${silence} onCancel=${() => setSilencing(false)} />`}
  </li>`;
}

function Silences({ silences, act }) {
  if (silences.length === 0) return html`<p class="empty">No active silences.</p>`;
  return html`<table class="silences">
    <thead><tr><th>matchers</th><th>from</th><th>until</th><th>by</th><th>comment</th><th></th></tr></thead>
    <tbody>
      ${silences.map(
        (silence) => html`<tr key=${silence.id} data-silence=${silence.id}>
          <td><code>${silence.matchers.join(", ")}</code></td><td>${silence.starts_at}</td><td>${silence.ends_at}</td>
          <td>${silence.created_by}</td><td>${silence.comment}</td>
          <td><button type="button" class="unsilence"
            onClick=${() => act(`/api/v1/silences/${encodeURIComponent(silence.id)}`, { method: "DELETE" })}>Unsilence</button></td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}

// A suppression as words: its kind and what it names.
function describeSuppression(suppression) {
  if (suppression === null || typeof suppression !== "object") return String(suppression ?? "");
  return Object.entries(suppression)
    .map(([key, value]) => (value && typeof value === "object" ? `${key} ${JSON.stringify(value)}` : `${key}=${value}`))
    .join(", ");
}

function History({ history }) {
  if (!history) return html`<p class="empty">Loading…</p>`;
  const { notifications, suppressed } = history;
  return html`${history.deliveries &&
    html`<p class="meta">deliveries: ${Object.entries(history.deliveries).map(([key, value]) => `${key} ${value}`).join(", ")}</p>`}
    ${notifications.length === 0
      ? html`<p class="empty">Nothing notified yet.</p>`
      : html`<table class="history">
          <thead><tr><th>at</th><th>group</th><th>alerts</th><th>why</th><th>sent</th></tr></thead>
          <tbody>
            ${notifications.map(
              (notification) => html`<tr key=${notification.notification_id} data-notification=${notification.notification_id}>
                <td>${notification.at}</td><td>${describeGroup(notification.group_labels)}</td>
                <td>${notification.alerts.map((alert) => html`<div>${alert.state} · ${alert.summary || alert.title}</div>`)}</td>
                <td>${notification.reason}</td><td>${notification.sent ? "yes" : "no"}</td>
              </tr>`,
            )}
          </tbody>
        </table>`}
    ${suppressed.length > 0 &&
    html`<h3>Held back</h3>
      <table class="history suppressed">
        <thead><tr><th>at</th><th>rule</th><th>state</th><th>why</th></tr></thead>
        <tbody>
          ${suppressed.map(
            (entry) => html`<tr><td>${entry.at}</td><td>${entry.rule_id}</td><td>${entry.state}</td><td>${describeSuppression(entry.suppression)}</td></tr>`,
          )}
        </tbody>
      </table>`}`;
}

function AdminTokenForm({ message, onSave, onCancel }) {
  const submit = (event) => {
    event.preventDefault();
    const value = event.target.elements.admin.value.trim();
    if (value) onSave(value);
  };
  return html`<form class="card admin" id="admin-token-form" onSubmit=${submit}>
    <p>${message} Acknowledging and silencing need an admin token
      (<code>inferwatch token create --scope admin --data DIR</code>); it is kept for this tab only.</p>
    <input id="admin-token" name="admin" type="password" autocomplete="off" />
    <button type="submit">Use it and retry</button>
    <button type="button" onClick=${onCancel}>Cancel</button>
  </form>`;
}

export function AlertsView({ token, params, onFailure, onLoaded }) {
  const [data, setData] = useState({ alerts: null, silences: [], detection: true, windows: {} });
  const [round, setRound] = useState(0);
  const [needsAdmin, setNeedsAdmin] = useState(null);
  const [actionError, setActionError] = useState(null);
  const wanted = STATES.includes(params.get("state")) ? params.get("state") : "all";

  useLoader(
    async () => {
      const [alerts, silences, rules, history] = await Promise.all([
        api(token, "/api/v1/alerts"),
        api(token, "/api/v1/silences"),
        api(token, "/api/v1/rules"),
        api(token, `/api/v1/notifications?limit=${HISTORY_ROWS}`),
      ]);
      const windows = Object.fromEntries(rules.rules.map((rule) => [rule.id, rule.window_seconds]));
      return { alerts: alerts.alerts, detection: alerts.detection, silences: silences.silences, windows, history, at: new Date() };
    },
    `${token}|${round}`,
    REFRESH_MS,
    (next) => {
      setData(next);
      onLoaded(next.at);
    },
    onFailure,
  );

  // Runs a changing request with the admin token (or the read token when
  // there is none); a refusal asks for an admin token and then retries.
  // Resolves to whether it was done.
  const act = async (path, options) => {
    const used = sessionStorage.getItem(ADMIN_TOKEN_KEY) || token;
    try {
      await api(used, path, { ...options, headers: { "Content-Type": "application/json" } });
      setActionError(null);
      setRound((n) => n + 1);
      return true;
    } catch (failure) {
      if (failure instanceof Unauthorized) {
        sessionStorage.removeItem(ADMIN_TOKEN_KEY);
        setNeedsAdmin({ path, options, message: failure.message });
      } else {
        setActionError(failure.message);
      }
      return false;
    }
  };

  let body;
  if (data.alerts === null) body = html`<p class="empty">Loading…</p>`;
  else if (!data.detection) body = html`<p class="empty">No rules run on this node (start serve with --rules).</p>`;
  else {
    const shown = data.alerts
      .filter((alert) => wanted === "all" || alert.state === wanted)
      .sort(
        (a, b) =>
          STATE_ORDER[a.state] - STATE_ORDER[b.state] ||
          SEVERITY_ORDER.indexOf(a.severity) - SEVERITY_ORDER.indexOf(b.severity) ||
          String(b.starts_at).localeCompare(String(a.starts_at)),
      );
    body =
      shown.length === 0
        ? html`<p class="empty">No ${wanted === "all" ? "" : wanted} alerts.</p>`
        : html`<ul class="alerts">${shown.map((alert) => html`<${AlertCard} key=${alert.alert_id} alert=${alert} act=${act} windowSeconds=${data.windows[alert.rule_id]} />`)}</ul>`;
  }
  const counts = Object.fromEntries(STATES.map((state) => [state, (data.alerts || []).filter((a) => state === "all" || a.state === state).length]));
  return html`
    ${needsAdmin &&
    html`<${AdminTokenForm}
      message=${needsAdmin.message}
      onCancel=${() => setNeedsAdmin(null)}
      onSave=${async (value) => {
        sessionStorage.setItem(ADMIN_TOKEN_KEY, value);
        const pending = needsAdmin;
        setNeedsAdmin(null);
        await act(pending.path, pending.options);
      }} />`}
    ${actionError && html`<section class="card error" id="action-error">${actionError}</section>`}
    <section class="card" id="alert-list">
      <h2>Alerts
        <span class="filters">
          ${STATES.map(
            (state) => html`<button type="button" class=${state === wanted ? "current" : ""} data-state=${state}
              onClick=${() => updateRoute({ state: state === "all" ? null : state })}>${state} (${counts[state]})</button>`,
          )}
        </span>
      </h2>
      ${body}
    </section>
    <section class="card" id="silence-list"><h2>Silences</h2><${Silences} silences=${data.silences} act=${act} /></section>
    <section class="card" id="notification-history"><h2>Notification history <span class="meta">newest first</span></h2>
      <${History} history=${data.history} /></section>`;
}
