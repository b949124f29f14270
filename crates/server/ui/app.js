// The inferwatch dashboard: the shell (token, navigation, time range) and
// the hash router over its views.
//
// Native ES modules, no bundler: preact + htm for the page, uPlot for the
// charts, both vendored by scripts/vendor-ui. Everything shown comes from
// the documented REST API (/api/v1/*) with the read token the user gives,
// kept in localStorage and sent as `Authorization: Bearer`; acknowledging
// and silencing ask for an admin token when the read token is refused.
//
// Routes (each shareable as a URL; `range=1h` or `from`/`to` select the
// time range everywhere):
//   #/                  overview (overview.js)
//   #/alerts            alerts, acknowledgements and silences (alerts.js)
//   #/sql?q=SQL         SQL console (sql.js)
//   #/model/MODEL_ID    a model's distributions and segment comparison (model.js)
//   #/rules             rules, SLOs and the ATLAS coverage matrix (rules.js)

import { html, render, useEffect, useState } from "/ui/vendor/htm-preact-standalone.mjs";
import {
  absoluteParams,
  currentRoute,
  href,
  rangeOf,
  RANGE_KEY,
  REFRESH_MS,
  RELATIVE,
  TOKEN_KEY,
  Unauthorized,
  updateRoute,
  windowOf,
} from "/ui/lib.js";
import { Overview } from "/ui/overview.js";
import { AlertsView } from "/ui/alerts.js";
import { SqlConsole } from "/ui/sql.js";
import { ModelPage, ModelIndex } from "/ui/model.js";
import { RulesView } from "/ui/rules.js";

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

// `datetime-local` shows local time without a zone.
function localInput(date) {
  const shifted = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return shifted.toISOString().slice(0, 16);
}

// Relative ranges, and an absolute one from two local times.
function RangePicker({ range }) {
  const shown = windowOf(range);
  const [from, setFrom] = useState(localInput(shown.from));
  const [to, setTo] = useState(localInput(shown.to));
  useEffect(() => {
    const next = windowOf(range);
    setFrom(localInput(next.from));
    setTo(localInput(next.to));
  }, [range.key]);
  const chooseRelative = (event) => {
    const name = event.target.value;
    if (!(name in RELATIVE)) return;
    localStorage.setItem(RANGE_KEY, name);
    updateRoute({ range: name, from: null, to: null });
  };
  const applyAbsolute = (event) => {
    event.preventDefault();
    const start = new Date(from).getTime();
    const end = new Date(to).getTime();
    if (Number.isFinite(start) && Number.isFinite(end) && start < end) {
      updateRoute(absoluteParams(start / 1000, end / 1000));
    }
  };
  return html`<form class="range" id="range-picker" onSubmit=${applyAbsolute}>
    <label>Range <select id="range" value=${range.absolute ? "absolute" : range.name} onChange=${chooseRelative}>
      ${Object.keys(RELATIVE).map((name) => html`<option value=${name}>last ${name}</option>`)}
      <option value="absolute" disabled>absolute</option>
    </select></label>
    <input type="datetime-local" id="range-from" value=${from} onInput=${(e) => setFrom(e.target.value)} />
    <span>to</span>
    <input type="datetime-local" id="range-to" value=${to} onInput=${(e) => setTo(e.target.value)} />
    <button type="submit" id="range-apply">Apply</button>
  </form>`;
}

const NAV = [
  ["/", "Overview"],
  ["/alerts", "Alerts"],
  ["/model", "Models"],
  ["/rules", "Rules & SLOs"],
  ["/sql", "SQL"],
];

function App() {
  const [token, setToken] = useState(localStorage.getItem(TOKEN_KEY));
  const [refused, setRefused] = useState(null);
  const [route, setRoute] = useState(currentRoute());
  const [status, setStatus] = useState({ error: null, at: null });

  useEffect(() => {
    // A new view starts with a clean status; the same view keeps its own.
    const follow = () =>
      setRoute((old) => {
        const next = currentRoute();
        if (next.path !== old.path) setStatus({ error: null, at: null });
        return next;
      });
    window.addEventListener("hashchange", follow);
    return () => window.removeEventListener("hashchange", follow);
  }, []);

  if (!token) {
    return html`<${TokenForm}
      message=${refused}
      onSave=${(value) => {
        localStorage.setItem(TOKEN_KEY, value);
        setRefused(null);
        setToken(value);
      }} />`;
  }
  const forget = () => {
    localStorage.removeItem(TOKEN_KEY);
    setToken(null);
  };
  // A refused read token goes back to the form; other failures are shown.
  const onFailure = (failure) => {
    if (failure instanceof Unauthorized && failure.status === 401) {
      localStorage.removeItem(TOKEN_KEY);
      setRefused(failure.message);
      setToken(null);
      return;
    }
    console.error("inferwatch: loading failed:", failure);
    setStatus({ error: failure.message, at: null });
  };
  const onLoaded = (at) => {
    window.inferwatch.refreshes += 1;
    setStatus({ error: null, at });
  };
  const range = rangeOf(route.params);
  // The range's parameters, for links that keep it.
  const rangeParams = range.absolute
    ? { from: new Date(range.from).toISOString(), to: new Date(range.to).toISOString() }
    : { range: range.name };
  const props = { token, range, rangeParams, params: route.params, onFailure, onLoaded };
  const section = route.path.split("/")[1] || "";
  let view;
  if (section === "") view = html`<${Overview} ...${props} />`;
  else if (section === "alerts") view = html`<${AlertsView} ...${props} />`;
  else if (section === "rules") view = html`<${RulesView} ...${props} />`;
  else if (section === "sql") view = html`<${SqlConsole} ...${props} />`;
  else if (section === "model" && route.path.split("/")[2])
    view = html`<${ModelPage} key=${route.path} modelId=${decodeURIComponent(route.path.split("/")[2])} ...${props} />`;
  else if (section === "model") view = html`<${ModelIndex} ...${props} />`;
  else view = html`<section class="card empty">No view at ${route.path}. <a href="#/">Overview</a></section>`;

  let shown = "loading…";
  if (status.error) shown = html`<span class="error">${status.error}</span>`;
  else if (status.at)
    shown = range.absolute ? `updated ${status.at.toLocaleTimeString()}` : `updated ${status.at.toLocaleTimeString()}, every ${REFRESH_MS / 1000} s`;
  return html`<header>
      <h1>inferwatch</h1>
      <nav>
        ${NAV.map(
          ([path, name]) =>
            html`<a href=${href(path, rangeParams)} class=${`/${section}` === path || (path === "/" && section === "") ? "current" : ""}>${name}</a>`,
        )}
      </nav>
      <${RangePicker} range=${range} />
      <span class="status" id="status">${shown}</span>
      <span class="spacer"></span>
      <button type="button" onClick=${forget}>Forget token</button>
    </header>
    <main key=${section}>${view}</main>`;
}

render(html`<${App} />`, document.getElementById("app"));
