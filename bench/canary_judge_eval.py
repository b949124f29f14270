#!/usr/bin/env python3
"""Detection and false-positive rates of the canary latency judge over seeds.

For each seed 1..N it simulates `canary-regression` for 1 h at 300 ev/s with
no extra canary errors, twice: the recsys 2.1 canary +20 % slower
(`--canary-latency-factor 1.2`, or `--factor F`) and not slower at all
(`1.0`). It runs
`inferwatch detect` with the rule file over each and counts

* a detection at +20 %: a `firing` alert of the rule for group
  model_id=recsys whose `starts_at` lies in the labelled incident window, or
  within 10 minutes of its start when the window is shorter;
* a false positive at +0 %: any `firing` alert of the rule in the run.

It prints a summary, writes it to bench/out/canary_judge.json, and exits 1
when the false-positive rate exceeds 1 % or the detection rate is below 95 %
(2 when a run fails). Python 3 standard library only; two seeds at a time.

Usage (from the repository root, after `cargo build --workspace --release`):
  python3 bench/canary_judge_eval.py [--seeds 100] [--binary PATH] [--rules PATH]
The binary defaults to $INFERWATCH_BIN, else target/release/inferwatch
(else $CARGO_TARGET_DIR/release/inferwatch); the rules to
rules/canary-latency-judge.yaml, whose `id:` names the rule to count.
"""

import argparse
import concurrent.futures
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO = "canary-regression"
GROUP = {"model_id": "recsys"}
DURATION = "1h"
RATE = "300"
DETECTED_FACTOR = 1.2
QUIET_FACTOR = 1.0
GRACE_SECONDS = 600  # a detection may start up to 10 min after the incident starts
MAX_FP_RATE = 0.01
MIN_DETECTION_RATE = 0.95

TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:\d{2})$"
)


class RunError(Exception):
    """A subprocess failed or printed something unreadable."""


def parse_time(text):
    """RFC 3339 -> seconds since the epoch (float), any fractional precision."""
    match = TIMESTAMP.match(text.strip())
    if not match:
        raise RunError(f"unreadable timestamp {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    moment = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second),
        tzinfo=timezone.utc,
    )
    seconds = moment.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds


def default_binary():
    if os.environ.get("INFERWATCH_BIN"):
        return os.environ["INFERWATCH_BIN"]
    local = os.path.join(ROOT, "target", "release", "inferwatch")
    target_dir = os.environ.get("CARGO_TARGET_DIR")
    if not os.path.exists(local) and target_dir:
        return os.path.join(target_dir, "release", "inferwatch")
    return local


def rule_id_of(path):
    """The top-level `id:` of a single-rule YAML file."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            match = re.match(r"^id:\s*['\"]?([^'\"\s#]+)", line)
            if match:
                return match.group(1)
    raise SystemExit(f"{path}: no top-level 'id:'; pass --rule-id")


def run(command):
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RunError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def simulate_and_detect(args, seed, factor, directory):
    """One run: returns (incident start, incident end, firing alerts of the rule)."""
    events = os.path.join(directory, f"events-{factor}.jsonl")
    labels = os.path.join(directory, f"labels-{factor}.jsonl")
    try:
        run([
            args.binary, "simulate", "--scenario", SCENARIO, "--duration", DURATION,
            "--rate", RATE, "--seed", str(seed), "--canary-latency-factor", str(factor),
            "--canary-error-rate", "0", "--labels", labels, "--output", events,
        ])
        stdout = run([
            args.binary, "detect", "--rules", args.rules, "--quiet",
            "--dead-letter", os.path.join(directory, "dead-letters.jsonl"), events,
        ])
    finally:
        if os.path.exists(events):
            os.remove(events)  # ~450 MB each: do not keep it until the seed ends
    with open(labels, encoding="utf-8") as handle:
        incidents = [json.loads(line) for line in handle if line.strip()]
    incident = [item for item in incidents if item.get("scenario") == SCENARIO]
    if len(incident) != 1:
        raise RunError(f"seed {seed}: expected one {SCENARIO} label, got {incidents}")
    firing = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            alert = json.loads(line)
        except json.JSONDecodeError as error:
            raise RunError(f"seed {seed}: detect printed a non-JSON line {line[:200]!r}: {error}")
        if alert.get("rule_id") == args.rule_id and alert.get("state") == "firing":
            firing.append(alert)
    return parse_time(incident[0]["start"]), parse_time(incident[0]["end"]), firing


def evaluate_seed(args, seed):
    with tempfile.TemporaryDirectory(prefix=f"canary-judge-{seed}-") as directory:
        start, end, slow = simulate_and_detect(args, seed, args.factor, directory)
        _, _, quiet = simulate_and_detect(args, seed, QUIET_FACTOR, directory)
    deadline = max(end, start + GRACE_SECONDS)
    delays = [
        parse_time(alert["starts_at"]) - start
        for alert in slow
        if all(alert.get("group", {}).get(key) == value for key, value in GROUP.items())
        and start <= parse_time(alert["starts_at"]) < deadline
    ]
    return {
        "seed": seed,
        "detected": bool(delays),
        "time_to_detect_s": min(delays) if delays else None,
        "false_positive": bool(quiet),
        "false_positive_alerts": [
            {"starts_at": alert.get("starts_at"), "group": alert.get("group")} for alert in quiet
        ],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="seeds 1..N (default 100)")
    parser.add_argument("--binary", default=default_binary(), help="inferwatch binary")
    parser.add_argument(
        "--rules", default=os.path.join(ROOT, "rules", "canary-latency-judge.yaml"),
        help="rule file (default rules/canary-latency-judge.yaml)",
    )
    parser.add_argument("--rule-id", help="rule to count (default: the rule file's id)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once (default 2)")
    parser.add_argument(
        "--factor", type=float, default=DETECTED_FACTOR,
        help="canary latency factor of the runs that should be detected (default 1.2)",
    )
    parser.add_argument(
        "--output", default=os.path.join(ROOT, "bench", "out", "canary_judge.json"),
        help="JSON results (default bench/out/canary_judge.json)",
    )
    args = parser.parse_args()
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    if not args.factor > 0:
        parser.error("--factor must be above 0")
    if not (os.path.isfile(args.binary) and os.access(args.binary, os.X_OK)):
        parser.error(f"no executable at {args.binary}; build it (cargo build --workspace --release) "
                     "or pass --binary / set INFERWATCH_BIN")
    if not os.path.isfile(args.rules):
        parser.error(f"no rule file at {args.rules}")
    args.rule_id = args.rule_id or rule_id_of(args.rules)

    results = []
    lock = threading.Lock()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(evaluate_seed, args, seed) for seed in range(1, args.seeds + 1)]
        try:
            for future in concurrent.futures.as_completed(futures):
                result = future.result()
                with lock:
                    results.append(result)
                    print(
                        f"seed {result['seed']:>4}: x{args.factor:g} "
                        f"{'detected' if result['detected'] else 'MISSED'}"
                        + (f" after {result['time_to_detect_s'] / 60:.1f} min" if result["detected"] else "")
                        + f", x1 {'FALSE POSITIVE' if result['false_positive'] else 'quiet'}"
                        f"  ({len(results)}/{args.seeds})",
                        file=sys.stderr, flush=True,
                    )
        except (RunError, KeyboardInterrupt) as error:
            for future in futures:
                future.cancel()
            print(f"canary_judge_eval: {error}", file=sys.stderr)
            return 2

    results.sort(key=lambda result: result["seed"])
    seeds = len(results)
    detected = sum(result["detected"] for result in results)
    false_positives = sum(result["false_positive"] for result in results)
    delays = [result["time_to_detect_s"] for result in results if result["detected"]]
    detection_rate = detected / seeds
    fp_rate = false_positives / seeds
    median_delay = statistics.median(delays) if delays else None
    passed = fp_rate <= MAX_FP_RATE and detection_rate >= MIN_DETECTION_RATE
    summary = {
        "rule_id": args.rule_id,
        "rules": os.path.relpath(args.rules, ROOT),
        "scenario": SCENARIO,
        "duration": DURATION,
        "rate": float(RATE),
        "canary_error_rate": 0.0,
        "seeds": seeds,
        "detection_factor": args.factor,
        "detected": detected,
        "detection_rate": detection_rate,
        "false_positive_factor": QUIET_FACTOR,
        "false_positives": false_positives,
        "false_positive_rate": fp_rate,
        "median_time_to_detect_s": median_delay,
        "max_false_positive_rate": MAX_FP_RATE,
        "min_detection_rate": MIN_DETECTION_RATE,
        "passed": passed,
        "per_seed": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")

    rows = [
        ("rule", args.rule_id),
        ("seeds", str(seeds)),
        (f"detection rate at x{args.factor:g} ({(args.factor - 1) * 100:+.0f} %)", f"{detection_rate:.1%} ({detected}/{seeds}; need >= {MIN_DETECTION_RATE:.0%})"),
        ("false-positive rate at x1 (+0 %)", f"{fp_rate:.1%} ({false_positives}/{seeds}; need <= {MAX_FP_RATE:.0%})"),
        ("median time to detect", "-" if median_delay is None else f"{median_delay / 60:.1f} min after the incident start"),
        ("verdict", "PASS" if passed else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"(written to {os.path.relpath(args.output)})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
