#!/usr/bin/env python3
"""Issue 17's scenario matrix: every fault and attack scenario, in the
simulator's names and in foreign names, run through the default rule pack.

    bench/scenario_matrix.py [path/to/inferwatch] [--hours-before 2] [--benign-hours 24]
                             [--rules DIR] [--json FILE]

Per scenario and naming mode: `inferwatch simulate` writes a fleet whose one
incident starts after `--hours-before` hours of history (the run lasts
2.5 times that, the incident is placed at 40 %), `inferwatch detect --rules
rules` reads it (through the foreign mapping in foreign mode), and the
labels say where the incident was and which entity it hit.

Columns:
- detected: a firing alert at or after the incident's start whose group
  names the entity (every key column it shares with the label has the
  label's value, and it shares at least one);
- time to detect: from the labelled start to that alert's start;
- other episodes: firing alerts that name no labelled entity, or fire
  outside the incident (start to end plus 10 minutes).
Then a benign fleet of `--benign-hours` (no incident) per mode, whose firing
alerts are all false episodes, reported per 24 h.

Every run has the simulator's benign noise (`simulate --noise`: a busy QA
client with unique inputs, an hour of backfill in every 12, mobile clients
hopping addresses in their own networks, a one-minute blip of errors,
latency or traffic every hour, new clients joining all day) on top of its
ordinary fleet (Zipf clients, a daily cycle, Poisson arrivals).

An alert is a firing transition of a rule whose severity is above `info`:
info findings (the behaviour forest) are risk contributions that never page.
`--json FILE` also writes the rows.
"""

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime

SCENARIOS = [
    "latency-regression",
    "error-spike",
    "canary-regression",
    "poisoned-source",
    "input-length-shift",
    "extraction",
    "dos",
    "partial-outage",
    "stolen-key",
    "cost-harvesting",
    "adversarial-probing",
    "membership-inference",
    "inversion",
    "slow-drift",
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seconds(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def simulate_and_detect(binary, work, scenario, hours, naming, rules):
    events = os.path.join(work, f"{scenario}-{naming}.jsonl")
    labels = os.path.join(work, f"{scenario}-{naming}.labels.jsonl")
    mapping = os.path.join(work, "foreign.yaml")
    simulate = [binary, "simulate", "--scenario", scenario, "--duration", f"{hours}h",
                "--output", events, "--labels", labels, "--noise"]
    if naming == "foreign":
        simulate += ["--naming", "foreign", "--mapping-out", mapping]
    subprocess.run(simulate, check=True, stderr=subprocess.DEVNULL)
    detect = [binary, "detect", "--quiet", "--rules", rules]
    if naming == "foreign":
        detect += ["--mapping", mapping]
    output = subprocess.run(detect + [events], check=True, capture_output=True, text=True).stdout
    os.remove(events)
    alerts = [json.loads(line) for line in output.splitlines() if line.strip()]
    alerts = [a for a in alerts if a.get("severity") != "info"]
    with open(labels) as file:
        incidents = [json.loads(line) for line in file if line.strip()]
    return alerts, incidents


def names(alert, key):
    shared = [column for column in key if column in alert["group"]]
    return bool(shared) and all(alert["group"][column] == key[column] for column in shared)


def judge(alerts, incidents):
    firing = [a for a in alerts if a["state"] == "firing"]
    incident = incidents[0]
    start, end = seconds(incident["start"]), seconds(incident["end"])
    hits = [a for a in firing if names(a, incident["key"]) and seconds(a["starts_at"]) >= start]
    delay = min((seconds(a["starts_at"]) - start) / 60 for a in hits) if hits else None
    rule = min(hits, key=lambda a: a["starts_at"])["rule_id"] if hits else "-"
    others = [a for a in firing
              if not names(a, incident["key"])
              or not start <= seconds(a["starts_at"]) <= end + 600]
    return delay, rule, others


def main():
    args = sys.argv[1:]
    binary = args[0] if args and not args[0].startswith("--") else os.path.join(
        ROOT, "target", "release", "inferwatch")
    hours_before = float(args[args.index("--hours-before") + 1]) if "--hours-before" in args else 2
    benign_hours = int(args[args.index("--benign-hours") + 1]) if "--benign-hours" in args else 24
    rules = args[args.index("--rules") + 1] if "--rules" in args else os.path.join(ROOT, "rules")
    hours = hours_before * 2.5
    rows, delays = [], {"default": [], "foreign": []}
    detected = total = 0
    with tempfile.TemporaryDirectory() as work:
        for scenario in SCENARIOS:
            for naming in ("default", "foreign"):
                alerts, incidents = simulate_and_detect(binary, work, scenario, hours, naming, rules)
                delay, rule, others = judge(alerts, incidents)
                total += 1
                if delay is not None:
                    detected += 1
                    delays[naming].append(delay)
                rows.append((scenario, naming, delay, rule, others))
        benign = {}
        for naming in ("default", "foreign"):
            alerts, _ = simulate_and_detect(binary, work, "baseline", benign_hours, naming, rules)
            firing = [a for a in alerts if a["state"] == "firing"]
            benign[naming] = firing
    if "--json" in args:
        with open(args[args.index("--json") + 1], "w") as file:
            json.dump({
                "rows": [{"scenario": s, "names": n, "minutes_to_detect": d, "rule": r,
                          "other_episodes": [{"rule_id": a["rule_id"], "group": a["group"],
                                              "starts_at": a["starts_at"]} for a in o]}
                         for s, n, d, r, o in rows],
                "benign": {n: [{"rule_id": a["rule_id"], "group": a["group"],
                                "starts_at": a["starts_at"]} for a in f]
                           for n, f in benign.items()},
                "benign_hours": benign_hours,
            }, file, indent=1)
    print(f"| scenario | names | detected | time to detect | by | other episodes |")
    print("|---|---|---|---|---|---|")
    for scenario, naming, delay, rule, others in rows:
        found = "yes" if delay is not None else "**no**"
        time = f"{delay:.0f} min" if delay is not None else "-"
        other = ", ".join(f"{a['rule_id']} {a['group']}" for a in others) or "0"
        print(f"| {scenario} | {naming} | {found} | {time} | {rule} | {other} |")
    print()
    print(f"detected {detected} of {total}")
    for naming, values in delays.items():
        if values:
            values = sorted(values)
            print(f"median time to detect ({naming}): {values[len(values) // 2]:.0f} min")
    for naming, firing in benign.items():
        per_day = len(firing) * 24 / benign_hours
        listed = ", ".join(f"{a['rule_id']} {a['group']}" for a in firing) or "none"
        print(f"benign fleet, {benign_hours} h, {naming} names: {len(firing)} false episodes "
              f"({per_day:.1f} per 24 h): {listed}")


if __name__ == "__main__":
    main()
