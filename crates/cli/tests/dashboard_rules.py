"""Drives the dashboard's SLO gauges, ingest-health panel and rules view in
headless Chromium (Playwright for Python with Debian's /usr/bin/chromium).
Run by crates/cli/tests/serve_http/rules_slos.rs, which starts the node with
rules and SLOs, stores events, keeps posting live ones and makes the token.

usage: dashboard_rules.py URL READ_TOKEN RULES_DIR SCREENSHOT_DIR

On the overview, waits until every SLO gauge has drawn a value and the
ingest-health panel shows a nonzero NDJSON rate; on #/rules, until every
rule has a status and the ATLAS matrix shows a covered technique; then
breaks RULES_DIR/slow.yaml and waits for the validation error. Prints one
JSON line of what it saw; exits non-zero with the reason otherwise
(console errors, page errors and failed requests included).
"""

import json
import os
import sys

from playwright.sync_api import sync_playwright

url, token, rules_dir, shots = sys.argv[1:5]
chromium = os.environ.get("INFERWATCH_CHROMIUM", "/usr/bin/chromium")
problems = []
seen = {}

with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on(
        "console",
        lambda message: message.type == "error"
        and problems.append(f"console error: {message.text}"),
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "requestfailed",
        lambda request: problems.append(f"request failed: {request.url} {request.failure}"),
    )
    page.on(
        "response",
        lambda response: response.status >= 400
        and problems.append(f"{response.status} for {response.url}"),
    )

    page.goto(url + "/ui/")
    page.fill("#token", token)
    page.click("#token-form button[type=submit]")

    # Overview: four gauges with values, and live NDJSON ingest. Generous
    # timeouts: this checks that it happens, not how fast.
    page.wait_for_function(
        "() => window.inferwatch.gauges && window.inferwatch.gauges.size >= 4", timeout=60_000
    )
    page.wait_for_function(
        """() => {
            const row = document.querySelector('#ingest-health tr[data-protocol="ndjson"]');
            return row && Number(row.dataset.rate) > 0;
        }""",
        timeout=60_000,
    )
    page.wait_for_function(
        """() => [...window.inferwatch.charts.values()].length >= 6 &&
            [...window.inferwatch.charts.values()].every((u) => u.data[0].length > 0)""",
        timeout=60_000,
    )
    overview = page.evaluate(
        """() => {
            const gauges = {};
            for (const figure of document.querySelectorAll("[data-gauge]")) {
                const arc = figure.querySelector("path.value");
                gauges[figure.dataset.gauge] = {
                    value: figure.dataset.value === "" ? null : Number(figure.dataset.value),
                    arc: !!arc && arc.getTotalLength() > 0,
                    text: figure.querySelector("text").textContent,
                };
            }
            const row = document.querySelector('#ingest-health tr[data-protocol="ndjson"]');
            return { gauges, ndjson_rate: Number(row.dataset.rate) };
        }"""
    )
    seen.update(overview)
    page.screenshot(path=os.path.join(shots, "dashboard-overview-slos.png"), full_page=True)

    # The rules view, from the navigation.
    page.click("header nav a:has-text('Rules')")
    page.wait_for_selector("#rules tr[data-rule]", timeout=30_000)
    page.wait_for_selector("#atlas .technique.covered", timeout=30_000)
    page.wait_for_selector("#validation-ok", timeout=30_000)
    page.wait_for_selector('#slos [data-slo="fleet-latency"] tbody tr', timeout=30_000)
    page.click('#atlas .technique.covered[data-technique="AML.T0024.002"] >> nth=0')
    page.wait_for_selector("#technique-detail", timeout=10_000)
    rules = page.evaluate(
        """() => ({
            statuses: Object.fromEntries([...document.querySelectorAll("#rules tr[data-rule]")]
                .map((row) => [row.dataset.rule, row.dataset.status])),
            covered: [...new Set([...document.querySelectorAll("#atlas .technique.covered")]
                .map((cell) => cell.dataset.technique))],
            technique_detail: document.querySelector("#technique-detail").textContent,
            slo_rows: document.querySelectorAll("#slos tbody tr").length,
            route: location.hash,
        })"""
    )
    seen.update(rules)
    page.screenshot(path=os.path.join(shots, "dashboard-rules.png"), full_page=True)

    # A broken edit: the next refresh lists the error and marks the rule.
    with open(os.path.join(rules_dir, "slow.yaml"), "w") as broken:
        broken.write("id: dashboard-slow-p99\ntitle: p99\nseverity: high\nwindow: 1m\ncondition: p99(latency_ms) >\n")
    page.wait_for_selector("#validation-errors", timeout=30_000)
    seen["validation"] = page.text_content("#validation-errors")
    seen["status_after_edit"] = page.get_attribute('#rules tr[data-rule="dashboard-slow-p99"]', "data-status")
    browser.close()

print(json.dumps(seen))
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
