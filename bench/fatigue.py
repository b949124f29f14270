#!/usr/bin/env python3
"""Alert-fatigue benchmark: raw findings against notifications.

Simulates a day of the fleet with three injected incidents, pipes it through
`inferwatch detect` with the whole default pack (rules/ and slos/), the
notification pipeline configured by crates/alert/examples/notify.yaml and a
webhook action pointing at a local receiver. Then it counts:

* raw findings: firing alert transitions detect printed (rules, SLOs, risk);
* notifications: what the pipeline handed to the dispatcher (from
  alert-history.jsonl), and their distinct group keys;
* deliveries: webhook requests the receiver got (one per alert transition
  that survived grouping, silences, inhibition and flapping).

An alert episode belongs to an incident when it started inside the
incident's labelled span (plus a tail) and its group agrees with the
incident's key on the labels they share; a notification or delivery belongs
to the incident of its episodes, so a reminder or resolution sent hours later
(an SLO's slow-burn window draining) still counts for it, and is shown as
"later". Anything else is noise. Target:
at most one notification group per incident and none outside incidents.

Usage: bench/fatigue.py [--bin PATH] [--rate N] [--scenarios a,b,c]
Writes bench/out/fatigue.json and prints a table.
"""

import argparse
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# A notification this long after an incident's end still belongs to it
# (resolution needs the windows to drain and group_interval to pass).
RESOLVE_TAIL_S = 45 * 60


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Receiver(http.server.BaseHTTPRequestHandler):
    bodies = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with Receiver.lock:
            Receiver.bodies.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    parser.add_argument("--bin", default=os.environ.get("INFERWATCH_BIN", os.path.join(target, "release", "inferwatch")))
    parser.add_argument("--rate", default="40")
    parser.add_argument("--duration", default="24h")
    parser.add_argument("--scenarios", default="latency-regression,canary-regression,extraction")
    parser.add_argument("--seed", default="7")
    parser.add_argument("--out", default=os.path.join(os.environ.get("BENCH_OUT", os.path.join(HERE, "out")), "fatigue.json"))
    args = parser.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="inferwatch-fatigue-")
    actions = os.path.join(work, "actions.yaml")
    with open(actions, "w") as f:
        f.write(
            "actions:\n  - name: bench-receiver\n    kind: webhook\n"
            f"    url: http://127.0.0.1:{server.server_port}/alerts\n"
        )
    labels_path = os.path.join(work, "labels.jsonl")
    alerts_path = os.path.join(work, "alerts.jsonl")
    state = os.path.join(work, "state")
    simulate = subprocess.Popen(
        [args.bin, "simulate", "--scenario", args.scenarios, "--duration", args.duration,
         "--rate", args.rate, "--seed", args.seed, "--labels", labels_path],
        stdout=subprocess.PIPE,
    )
    detect = subprocess.run(
        [args.bin, "detect", "--quiet", "--rules", os.path.join(ROOT, "rules"),
         "--slos", os.path.join(ROOT, "slos"), "--actions", actions,
         "--notify", os.path.join(ROOT, "crates/alert/examples/notify.yaml"),
         "--state-dir", state, "--dead-letter", os.path.join(work, "dead.jsonl"),
         "--output", alerts_path, "-"],
        stdin=simulate.stdout, stderr=subprocess.PIPE, text=True,
    )
    simulate.stdout.close()
    if simulate.wait() != 0 or detect.returncode != 0:
        sys.exit(f"inferwatch failed:\n{detect.stderr}")
    server.shutdown()

    incidents = [json.loads(line) for line in open(labels_path)]
    spans = [(parse_time(i["start"]), parse_time(i["end"]) + RESOLVE_TAIL_S) for i in incidents]

    def matches(key, group):
        shared = [name for name in key if name in group]
        return bool(shared) and all(group[name] == key[name] for name in shared)

    def incident_of(at, groups):
        """The incident whose span holds `at` and whose key agrees with one of
        the alert groups (on the labels they share); None is noise."""
        for index, (start, end) in enumerate(spans):
            key = incidents[index].get("key") or {}
            if start <= at <= end and any(matches(key, g) for g in groups):
                return index
        return None

    transitions = [json.loads(line) for line in open(alerts_path)]
    findings = [a for a in transitions if a["state"] == "firing"]
    notifications = []
    for line in open(os.path.join(state, "alert-history.jsonl")):
        record = json.loads(line)
        if record.get("kind") == "notification":
            notifications.append(record["notification"])
    risk = [a for n in notifications for a in n["alerts"] if a["rule_id"] == "risk-threshold" and a["state"] == "firing"]

    per_incident = [{"scenario": i["scenario"], "key": i.get("key"), "start": i["start"], "end": i["end"],
                     "findings": 0, "notifications": 0, "follow_ups": 0, "groups": set(), "deliveries": 0}
                    for i in incidents]
    outside = {"findings": 0, "notifications": 0, "groups": set(), "deliveries": 0, "rules": set()}
    for alert in findings:
        index = incident_of(parse_time(alert["starts_at"]), [alert["group"]])
        slot = outside if index is None else per_incident[index]
        slot["findings"] += 1
        if index is None:
            outside["rules"].add(alert["rule_id"])
    for notification in notifications:
        # A notification belongs to the incident one of its alert episodes
        # started in: a reminder or a resolution hours later is still about it.
        index = next((i for a in notification["alerts"]
                      if (i := incident_of(parse_time(a["starts_at"]), [a["group"]])) is not None), None)
        slot = outside if index is None else per_incident[index]
        slot["notifications"] += 1
        slot["groups"].add(notification["group_key"])
        if index is not None and parse_time(notification["at"]) > spans[index][1]:
            slot["follow_ups"] += 1
    for body in Receiver.bodies:
        alert = body.get("alert", body)
        index = incident_of(parse_time(alert["starts_at"]), [alert["group"]])
        slot = outside if index is None else per_incident[index]
        slot["deliveries"] += 1

    print(f"{len(incidents)} incidents over {args.duration} at {args.rate} events/s; "
          f"{len(findings)} raw findings, {len(notifications)} notifications, {len(Receiver.bodies)} webhook deliveries")
    print(f"{'incident':<22}{'findings':>10}{'notifications':>15}{'(later)':>9}{'groups':>8}{'deliveries':>12}")
    for row in per_incident:
        print(f"{row['scenario']:<22}{row['findings']:>10}{row['notifications']:>15}{row['follow_ups']:>9}{len(row['groups']):>8}{row['deliveries']:>12}"
              f"   {', '.join(sorted(row['groups']))}")
    print(f"{'outside incidents':<22}{outside['findings']:>10}{outside['notifications']:>15}{'':>9}{len(outside['groups']):>8}{outside['deliveries']:>12}"
          f"   {', '.join(sorted(outside['groups']))}")
    if outside["rules"]:
        print("findings outside incidents came from: " + ", ".join(sorted(outside["rules"])))
    met = all(len(row["groups"]) <= 1 for row in per_incident) and not outside["groups"]
    print("target (<= 1 notification group per incident, none outside): " + ("met" if met else "MISSED"))

    def plain(row):
        return {k: (sorted(v) if isinstance(v, set) else v) for k, v in row.items()}

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"duration": args.duration, "rate": args.rate, "scenarios": args.scenarios,
                   "raw_findings": len(findings), "transitions": len(transitions),
                   "notifications": len(notifications), "deliveries": len(Receiver.bodies),
                   "risk_alerts": len(risk), "incidents": [plain(r) for r in per_incident],
                   "outside": plain(outside), "target_met": met, "work_dir": work}, f, indent=2)
    print(f"wrote {args.out} (work files in {work})")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
