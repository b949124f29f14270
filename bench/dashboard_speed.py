"""How long the dashboard's overview takes from navigation to drawn charts.

usage: dashboard_speed.py URL READ_TOKEN FROM TO STORED_EVENTS OUT_JSON [LOADS]

Run by `bench/run dashboard` against a running `inferwatch serve`. Each load
is a fresh browser context (empty HTTP cache and storage; the token is put
in localStorage before the page runs), navigating to the overview over the
absolute range FROM..TO. The time is the page's own clock
(performance.now(), zero at navigation start) at the first moment every
model panel's three charts hold data: the signal the browser tests wait
for. Prints a summary and writes OUT_JSON with every load, the median, each
API request's duration (Resource Timing) and which answered from rollups
(the overview asks GET /api/v1/series/overview once for every chart).
"""

import datetime
import json
import os
import statistics
import sys
import urllib.parse

from playwright.sync_api import sync_playwright

url, token, start, end, stored, out = sys.argv[1:7]
loads = int(sys.argv[7]) if len(sys.argv) > 7 else 5
chromium = os.environ.get("INFERWATCH_CHROMIUM", "/usr/bin/chromium")
route = "/ui/#/?" + urllib.parse.urlencode({"from": start, "to": end})

DRAWN = """() => {
    const panels = document.querySelectorAll("section.model").length;
    const charts = [...window.inferwatch.charts.values()];
    const drawn = panels > 0 && charts.length === 3 * panels && charts.every((u) =>
        u.data[0].length > 0 &&
        u.data.slice(1).every((values) => values.some((v) => v !== null && Number.isFinite(v))));
    return drawn ? { ms: performance.now(), panels, points: charts.map((u) => u.data[0].length) } : null;
}"""

runs = []
with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    )
    for number in range(loads):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_init_script(f"localStorage.setItem('inferwatch.token', {json.dumps(token)});")
        page = context.new_page()
        errors = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        sources = {}

        def note(response):
            if "/api/v1/series" in response.url and response.status == 200:
                try:
                    sources.setdefault(response.json().get("source", "?"), 0)
                    sources[response.json().get("source", "?")] += 1
                except Exception as failure:  # noqa: BLE001 - reported below
                    errors.append(f"series answer: {failure}")

        page.on("response", note)
        page.goto(url + route)
        drawn = page.wait_for_function(DRAWN, timeout=300_000, polling="raf").json_value()
        requests = page.evaluate(
            """() => performance.getEntriesByType("resource")
                .filter((entry) => entry.name.includes("/api/"))
                .map((entry) => ({
                    path: new URL(entry.name).pathname,
                    metric: new URL(entry.name).searchParams.get("metric"),
                    start_ms: entry.startTime,
                    ms: entry.duration,
                }))"""
        )
        if errors:
            sys.exit(f"load {number}: page errors: {errors}")
        runs.append({"ms": drawn["ms"], "panels": drawn["panels"], "points": drawn["points"],
                     "requests": requests, "series_sources": sources})
        print(f"load {number + 1}: {drawn['ms']:.0f} ms, {drawn['panels']} panels, "
              f"{len(requests)} API requests", file=sys.stderr)
        context.close()
    browser.close()


def per_endpoint(runs):
    grouped = {}
    for run in runs:
        for request in run["requests"]:
            name = request["path"] + (f"?metric={request['metric']}" if request["metric"] else "")
            grouped.setdefault(name, []).append(request["ms"])
    return {name: {"requests": len(times), "median_ms": round(statistics.median(times), 1),
                   "max_ms": round(max(times), 1)} for name, times in sorted(grouped.items())}


times = [run["ms"] for run in runs]
report = {
    "what": "overview of 24 h x every model version, navigation to all charts drawn, headless Chromium",
    "command": "bench/run dashboard " + os.environ.get("BENCH_EVENTS", ""),
    "date": datetime.date.today().isoformat(),
    "stored_events": int(stored),
    "range": {"from": start, "to": end},
    "loads_ms": [round(ms, 1) for ms in times],
    "median_ms": round(statistics.median(times), 1),
    "target_ms": 1000,
    "panels": runs[0]["panels"],
    "charts": 3 * runs[0]["panels"],
    "points_per_chart": runs[0]["points"][0],
    "series_sources": runs[0]["series_sources"],
    "series_request": "one GET /api/v1/series/overview (one scan of inference_rollups) for every chart",
    "endpoints": per_endpoint(runs),
}
with open(out, "w") as file:
    json.dump(report, file, indent=1)
print(json.dumps({k: report[k] for k in ("stored_events", "loads_ms", "median_ms", "panels", "series_sources")}))
