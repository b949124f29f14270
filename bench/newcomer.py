"""The newcomer check: a fresh clone, the README's first command, the browser.

usage: newcomer.py REPOSITORY OUT_DIR

Clones REPOSITORY (a path or URL) into OUT_DIR/clone, takes the first
```sh block of its README (the live demo), runs it there as a newcomer
would paste it, and times each step: the clone, the build (cargo's own
"Finished" line), the node printing its dashboard URL and read token, then
headless Chromium (Debian's, through Playwright) at that URL with the token
pasted into the dashboard's token box as the README says: the page drawn
with no console error, every chart holding data, and a firing alert listed.
Writes OUT_DIR/newcomer.json and OUT_DIR/newcomer.png, prints what
stumbled. CARGO_TARGET_DIR, when set, is passed on: a warm target directory
times the steps after the build, not a cold build.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from playwright.sync_api import sync_playwright

repository, out = sys.argv[1:3]
os.makedirs(out, exist_ok=True)
clone = os.path.join(out, "clone")
shutil.rmtree(clone, ignore_errors=True)
steps, stumbles = {}, []
began = time.monotonic()


def mark(name):
    steps[name] = round(time.monotonic() - began, 1)
    print(f"{steps[name]:8.1f} s  {name}", file=sys.stderr)


subprocess.run(["git", "clone", "--quiet", repository, clone], check=True)
mark("cloned")
readme = open(os.path.join(clone, "README.md"), encoding="utf-8").read()
first = re.search(r"```sh\n(.*?)```", readme, re.S).group(1).strip()
print(f"the README's first command: {first}", file=sys.stderr)
demo = subprocess.Popen(
    ["bash", "-c", "exec " + first], cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    text=True, start_new_session=True,
)
found = {}
ready = threading.Event()


def read_stdout():
    for line in demo.stdout:
        for key, prefix in (("url", "Dashboard:"), ("token", "Read token:")):
            if line.strip().startswith(prefix):
                found[key] = line.strip()[len(prefix):].strip()
        if "url" in found and "token" in found:
            ready.set()


def read_stderr():
    for line in demo.stderr:
        if line.strip().startswith("Finished") and "built" not in steps:
            mark("built")
        if "error" in line.lower() and "dead letter" not in line.lower():
            stumbles.append(f"stderr: {line.strip()}")


threading.Thread(target=read_stdout, daemon=True).start()
threading.Thread(target=read_stderr, daemon=True).start()
try:
    if not ready.wait(timeout=3600):
        sys.exit("the demo printed no dashboard URL and token within an hour")
    mark("url and token printed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get("INFERWATCH_CHROMIUM", "/usr/bin/chromium"),
            headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(found["url"])
        # The newcomer pastes the printed read token where the page asks.
        box = page.locator("input[type=password], input[name=token], #token").first
        box.wait_for(timeout=30_000)
        box.fill(found["token"])
        box.press("Enter")
        mark("token pasted")
        page.wait_for_function(
            """() => window.inferwatch && [...window.inferwatch.charts.values()].length > 0 &&
                 [...window.inferwatch.charts.values()].every((u) => u.data[0].length > 0)""",
            timeout=600_000, polling=500,
        )
        mark("every chart holds data")
        page.wait_for_function(
            """() => [...document.querySelectorAll("#alerts li")].some((li) =>
                 li.querySelector(".state")?.textContent === "firing")""",
            timeout=600_000, polling=1000,
        )
        mark("a firing alert is listed")
        page.screenshot(path=os.path.join(out, "newcomer.png"), full_page=True)
        stumbles.extend(f"console: {error}" for error in errors)
        browser.close()
finally:
    os.killpg(demo.pid, signal.SIGINT)
    try:
        demo.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
report = {"command": first, "steps_seconds": steps, "stumbles": stumbles,
          "target_dir": os.environ.get("CARGO_TARGET_DIR", "(the clone's own, cold)")}
json.dump(report, open(os.path.join(out, "newcomer.json"), "w"), indent=1)
print(json.dumps(report, indent=1))
