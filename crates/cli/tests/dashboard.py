"""Drives the dashboard in headless Chromium (Playwright for Python with
Debian's /usr/bin/chromium, no browser download). Run by
crates/cli/tests/serve_http.rs (module `dashboard`), which starts the node,
posts the events and makes the token.

usage: dashboard.py URL READ_TOKEN EXPECTED_SUMMARY SCREENSHOT

Loads the page, gives it the token through its form and waits until every
chart holds data and the alert summary is listed. Prints one JSON line of
what it saw; exits non-zero with the reason otherwise (console errors, page
errors and failed requests included).
"""

import json
import os
import sys

from playwright.sync_api import sync_playwright

url, token, summary, screenshot = sys.argv[1:5]
chromium = os.environ.get("INFERWATCH_CHROMIUM", "/usr/bin/chromium")
problems = []

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

    # A browser's GET / is sent to the dashboard.
    page.goto(url + "/")
    assert page.url.endswith("/ui/"), page.url
    page.fill("#token", token)
    page.click("#token-form button[type=submit]")

    # Generous: this checks that it happens, not how fast.
    page.wait_for_function(
        """() => {
            const charts = [...window.inferwatch.charts.values()];
            return charts.length >= 6 && charts.every((u) =>
                u.data[0].length > 0 &&
                u.data.slice(1).every((values) => values.some((v) => v !== null && Number.isFinite(v))));
        }""",
        timeout=60_000,
    )
    page.wait_for_selector(f"#alerts .summary:has-text({json.dumps(summary)})", timeout=60_000)

    seen = page.evaluate(
        """() => {
            const charts = [...window.inferwatch.charts.entries()];
            // Each chart's canvas: count the pixels something was drawn on.
            const inked = (u) => {
                const { width, height } = u.ctx.canvas;
                const pixels = u.ctx.getImageData(0, 0, width, height).data;
                let count = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) count += 1;
                return count;
            };
            return {
                charts: charts.map(([id, u]) => ({
                    id,
                    points: u.data[0].length,
                    series: u.data.length - 1,
                    inked_pixels: inked(u),
                    alert_markers: (u.markers || []).length,
                    width: u.width,
                })),
                alerts: [...document.querySelectorAll("#alerts .summary")].map((e) => e.textContent),
                refreshes: window.inferwatch.refreshes,
            };
        }"""
    )
    for chart in seen["charts"]:
        if chart["inked_pixels"] == 0:
            problems.append(f"chart {chart['id']} drew nothing")
    page.screenshot(path=screenshot, full_page=True)

    # Auto-refresh: another round of requests arrives within a few periods.
    first = seen["refreshes"]
    page.wait_for_function(f"() => window.inferwatch.refreshes > {first}", timeout=30_000)

    # The range picker asks again for the new range and still draws.
    page.select_option("#range", "1h")
    page.wait_for_function(
        """() => [...window.inferwatch.charts.values()].every((u) => u.data[0].length > 0)""",
        timeout=30_000,
    )
    browser.close()

print(json.dumps(seen))
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
