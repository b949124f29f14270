"""Drives the dashboard's alerts, model and SQL views in headless Chromium
(Playwright for Python with Debian's /usr/bin/chromium). Run by
crates/cli/tests/serve_http.rs (module `dashboard_views`) against
`inferwatch demo`, whose simulator runs a poisoned-source incident.

usage: dashboard_views.py URL READ_TOKEN ADMIN_TOKEN RULE_ID SUMMARY SCREENSHOT_DIR

RULE_ID and SUMMARY name a firing alert of the poisoned source (its group
has model_id and source_id). The script:
- opens the alerts view and waits for that alert's summary;
- acknowledges it and silences it through the page (which asks for the
  admin token when the read token is refused), checks both through the
  REST API, then unsilences it and checks that the silence is gone;
- follows the alert's link to its model page, where the comparison of
  its source against the rest must be "apart" and another source's not;
- runs a query in the SQL console with Ctrl+Enter and checks the chart
  drew it and the URL shares it;
- drags over an overview chart and checks the range became absolute.
Prints one JSON line of what it saw; exits non-zero with the reasons
otherwise (console errors, page errors and failed requests included).
"""

import json
import os
import sys
from urllib.parse import quote, unquote

from playwright.sync_api import sync_playwright

url, read, admin, rule_id, summary, shots = sys.argv[1:7]
chromium = os.environ.get("INFERWATCH_CHROMIUM", "/usr/bin/chromium")
problems = []
seen = {}
# The one refusal the test provokes: acknowledging with the read token.
expected_refusals = []

INKED = """(id) => {
    const u = window.inferwatch.charts.get(id);
    if (!u || u.data[0].length === 0) return 0;
    const { width, height } = u.ctx.canvas;
    const pixels = u.ctx.getImageData(0, 0, width, height).data;
    let count = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) count += 1;
    return count;
}"""

# Data, and scales that place it (a chart whose x scale is unranged draws
# its axes and grid but no point).
HAS_DATA = """(id) => {
    const u = window.inferwatch.charts.get(id);
    return !!u && u.data[0].length > 0 &&
        u.data.slice(1).some((values) => Array.from(values).some((v) => v !== null && Number.isFinite(v))) &&
        Number.isFinite(u.scales.x.min) && Number.isFinite(u.scales.x.max) && u.scales.x.min < u.scales.x.max;
}"""


def wait_chart(page, chart_id):
    page.wait_for_function(HAS_DATA, arg=chart_id, timeout=60_000)
    inked = page.evaluate(INKED, chart_id)
    if inked == 0:
        problems.append(f"chart {chart_id} drew nothing")
    return inked


def rest(page, path, token=read):
    answer = page.request.get(url + path, headers={"Authorization": f"Bearer {token}"})
    assert answer.ok, f"{path}: {answer.status}"
    return answer.json()


def on_response(response):
    if response.status < 400:
        return
    if response.status == 403 and "/ack" in response.url and expected_refusals:
        expected_refusals.pop()
        return
    problems.append(f"{response.status} for {response.url}")


def on_console(message):
    if message.type != "error":
        return
    # Chromium logs every 4xx answer to fetch; the expected 403 is one.
    if "403" in message.text and "Failed to load resource" in message.text:
        return
    problems.append(f"console error: {message.text}")


with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "requestfailed",
        lambda request: problems.append(f"request failed: {request.url} {request.failure}"),
    )
    page.on("response", on_response)

    page.goto(url + "/ui/#/alerts")
    page.fill("#token", read)
    page.click("#token-form button[type=submit]")

    # --- Alerts: the poisoned source's alert with its summary.
    card = page.locator(f"li.alert[data-rule={json.dumps(rule_id)}]").filter(has_text=summary).first
    card.wait_for(timeout=60_000)
    seen["alert_summary"] = card.locator(".summary").text_content()
    seen["alert_has_impact"] = card.locator(".impact").count() == 1
    seen["alert_has_evidence"] = card.locator(".evidence").count() == 1
    # The notification history lists what the node sent.
    page.wait_for_selector("#notification-history tr[data-notification]", timeout=60_000)
    seen["notifications_shown"] = page.locator("#notification-history tr[data-notification]").count()
    page.screenshot(path=os.path.join(shots, "dashboard-alerts.png"), full_page=False)

    # Acknowledge: the read token is refused (403), the page asks for the
    # admin token and retries with it.
    expected_refusals.append("ack")
    card.locator("button.ack").click()
    page.fill("#admin-token", admin)
    page.click("#admin-token-form button[type=submit]")
    card.locator(".badge.acknowledged").wait_for(timeout=30_000)
    alert_id = card.get_attribute("data-alert")
    listed = [a for a in rest(page, "/api/v1/alerts")["alerts"] if a["alert_id"] == alert_id]
    seen["acknowledged_via_rest"] = bool(listed) and listed[0]["acknowledged"]

    # Silence with the prefilled matchers (alertname and the group) for 1h.
    card.locator("button.silence").click()
    card.locator("select[name=duration]").select_option("1h")
    card.locator("input[name=comment]").fill("from the browser test")
    card.locator("button.create-silence").click()
    card.locator(".badge.silenced").wait_for(timeout=30_000)
    silences = rest(page, "/api/v1/silences")["silences"]
    ours = [s for s in silences if s["comment"] == "from the browser test"]
    seen["silence_via_rest"] = ours[0] if ours else None
    listed = [a for a in rest(page, "/api/v1/alerts")["alerts"] if a["alert_id"] == alert_id]
    seen["silenced_via_rest"] = bool(listed) and listed[0]["silenced"]

    # Unsilence it from the silences table.
    if ours:
        row = page.locator(f"tr[data-silence={json.dumps(ours[0]['id'])}]")
        row.locator("button.unsilence").click()
        row.wait_for(state="detached", timeout=30_000)
        left = [s for s in rest(page, "/api/v1/silences")["silences"] if s["id"] == ours[0]["id"]]
        seen["unsilenced_via_rest"] = not left

    # --- The alert's model page at its time: its source stands apart.
    card.locator("a.model-link").click()
    page.wait_for_selector("#compare-verdict", timeout=60_000)
    route = unquote(page.url.split("#", 1)[1])
    seen["model_route"] = route
    seen["poisoned_verdict"] = page.get_attribute("#compare-verdict", "data-apart")
    seen["poisoned_ks"] = float(page.text_content("[data-statistic=ks]"))
    seen["poisoned_psi"] = float(page.text_content("[data-statistic=psi]"))
    charts = {}
    for chart_id in ["model/compare", "model/confidence", "model/tokens-latency"]:
        charts[chart_id] = wait_chart(page, chart_id)
    page.screenshot(path=os.path.join(shots, "dashboard-model.png"), full_page=True)

    # Another source of the same model, against the rest: not apart.
    poisoned = route.split("segment=source_id=", 1)[1].split("&", 1)[0]
    other = "src-01" if poisoned != "src-01" else "src-02"
    page.click(f"a[data-source={json.dumps(other)}]")
    page.wait_for_function(
        f"() => document.querySelector('#compare-verdict')?.textContent.includes({json.dumps(other)})",
        timeout=60_000,
    )
    seen["other_source"] = other
    seen["other_verdict"] = page.get_attribute("#compare-verdict", "data-apart")
    seen["other_ks"] = float(page.text_content("[data-statistic=ks]"))

    # Every source against the rest: the poisoned one heads the list and
    # is the only one apart.
    page.click("#scan-sources")
    page.wait_for_selector("#source-scan tr[data-source-row]", timeout=120_000)
    seen["scan"] = page.evaluate(
        """() => [...document.querySelectorAll('#source-scan tr[data-source-row]')].map((row) => ({
            source: row.dataset.sourceRow, apart: row.dataset.apart === 'true', d: Number(row.cells[2].textContent) }))"""
    )
    page.screenshot(path=os.path.join(shots, "dashboard-model-sources.png"), full_page=True)

    # --- SQL console: Ctrl+Enter runs, the chart draws, the URL shares it.
    page.goto(url + "/ui/#/sql")
    page.fill(
        "#sql-editor",
        "SELECT date_trunc('minute', timestamp) AS minute, count(*) AS requests, avg(latency_ms) AS mean_latency\n"
        "FROM inference WHERE timestamp > now() - INTERVAL '20 minutes' GROUP BY 1 ORDER BY 1",
    )
    page.focus("#sql-editor")
    page.keyboard.press("Control+Enter")
    charts["sql/result"] = wait_chart(page, "sql/result")
    seen["sql_points"] = page.evaluate("() => window.inferwatch.charts.get('sql/result').data[0].length")
    seen["sql_url_shares_query"] = "count(*)" in unquote(page.url)
    seen["sql_rows_shown"] = page.locator("#sql-result tbody tr").count()
    page.screenshot(path=os.path.join(shots, "dashboard-sql.png"), full_page=False)

    # A shared link runs its query on opening.
    shared = page.url
    page.goto(url + "/ui/#/")
    page.goto(shared)
    charts["sql/result (shared link)"] = wait_chart(page, "sql/result")

    # 100,000 raw rows are charted as they are (not downsampled).
    page.goto(
        url + "/ui/#/sql?q=" + quote("SELECT timestamp, latency_ms FROM inference ORDER BY timestamp LIMIT 100000")
    )
    page.wait_for_function(
        "() => window.inferwatch.charts.get('sql/result')?.data[0].length === 100000", timeout=120_000
    )
    charts["sql/result (100k rows)"] = wait_chart(page, "sql/result")
    seen["sql_large_points"] = page.evaluate("() => window.inferwatch.charts.get('sql/result').data[0].length")

    # --- Overview on an absolute hour (which does not refresh, so nothing
    # moves under the mouse): dragging over a chart selects a narrower one.
    hour_from, hour_to = page.evaluate(
        "() => { const now = Date.now(); return [new Date(now - 3600e3).toISOString(), new Date(now).toISOString()]; }"
    )
    page.goto(url + f"/ui/#/?from={hour_from}&to={hour_to}")
    page.wait_for_function(
        "() => [...window.inferwatch.charts.keys()].some((id) => id.endsWith('/volume'))", timeout=60_000
    )
    chart_id = page.evaluate("() => [...window.inferwatch.charts.keys()].find((id) => id.endsWith('/volume'))")
    wait_chart(page, chart_id)
    # On screen first: the mouse only reaches what the viewport shows.
    page.locator(f"[data-chart={json.dumps(chart_id)}] .u-over").scroll_into_view_if_needed()
    over = page.locator(f"[data-chart={json.dumps(chart_id)}] .u-over").bounding_box()
    page.mouse.move(over["x"] + over["width"] * 0.5, over["y"] + over["height"] / 2)
    page.mouse.down()
    page.mouse.move(over["x"] + over["width"] * 0.8, over["y"] + over["height"] / 2, steps=5)
    page.mouse.up()
    page.wait_for_function(
        f"() => location.hash.includes('from=') && !location.hash.includes({json.dumps(hour_from)})", timeout=30_000
    )
    # The charts now show the dragged span: less than the hour they showed.
    page.wait_for_function(
        f"""() => {{
            const u = window.inferwatch.charts.get({json.dumps(chart_id)});
            return u && u.scales.x.max - u.scales.x.min < 0.5 * 3600;
        }}""",
        timeout=30_000,
    )
    wait_chart(page, chart_id)
    seen["zoomed_route"] = unquote(page.url.split("#", 1)[1])
    seen["zoomed_x_range"] = page.evaluate(
        f"() => {{ const u = window.inferwatch.charts.get({json.dumps(chart_id)}); return [u.scales.x.min, u.scales.x.max]; }}"
    )
    seen["charts_inked"] = charts
    browser.close()

print(json.dumps(seen))
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
