#!/usr/bin/env python3
"""Labelled univariate corpus for `inferwatch score` and its peers (issue 17, item 5).

Usage: corpus.py OUT_DIR [--bin INFERWATCH]

Writes OUT_DIR/series/<id>.csv (`timestamp,value`, epoch seconds, the format
`inferwatch score` reads), OUT_DIR/labels/<id>.json (the anomaly windows as
row indices and timestamps) and OUT_DIR/metadata.json (every series, its
type, rate, noise, seed and half, and the split rule). Deterministic: numpy
only, fixed seeds; the same arguments give the same bytes.

Synthetic series: seven anomaly types (spike, level_shift, variance_change,
trend_change, seasonal_break, flatline, drift) x three sampling steps (1 min,
5 min, 1 h) x three noise levels (low, mid, high; high noise is heavy-tailed,
Student t with 4 degrees of freedom). Each combination is generated with two
seeds: the lower seed goes to the development half, the higher one to the
held-back half. The split is fixed here, before any tuning, and written to
metadata.json.

Simulator series (type `simulator`): `inferwatch simulate` with four
incidents (latency-regression on fraud, error-spike on vision, dos on
chat-llm, input-length-shift on recsys), 12 h at 10 events/s, aggregated per
minute into the metric the incident moves: p95 latency, error rate, request
count, mean input tokens. Simulator seeds 101 and 103 are development, 102
and 104 held back. Skipped (with a note in metadata.json) when --bin is not
given.

Label windows are [start, end] row indices, inclusive: detected if the score
crosses the threshold inside. `ignore_after` rows after a window are neither
hits nor false positives: the end of a bounded episode (a flatline that
resumes, a variance burst that calms down) is a change of its own. The
first `probation` rows (15 %) hold no anomaly and are not judged.
"""
import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np

TYPES = ["spike", "level_shift", "variance_change", "trend_change", "seasonal_break", "flatline", "drift"]
# step seconds -> series length (points): 3 days at 1 min, 7 days at 5 min, 8 weeks hourly
STEPS = {"1min": (60, 4320), "5min": (300, 2016), "1h": (3600, 1344)}
# noise standard deviation as a fraction of the level
NOISE = {"low": 0.02, "mid": 0.06, "high": 0.12}
SEEDS_PER_COMBINATION = 2
PROBATION = 0.15
START = 1704067200  # 2024-01-01T00:00:00Z, a Monday
DAY = 86400
SIM_SEEDS = {101: "development", 102: "held_back", 103: "development", 104: "held_back"}
SIM_METRICS = {
    # scenario -> (model, metric)
    "latency-regression": ("fraud", "p95_latency_ms"),
    "error-spike": ("vision", "error_rate"),
    "dos": ("chat-llm", "requests"),
    "input-length-shift": ("recsys", "mean_input_tokens"),
}


def noise(rng, kind, n, sigma):
    if kind == "high":
        # Student t(4) scaled to unit variance: occasional large but normal excursions
        return sigma * rng.standard_t(4, n) / np.sqrt(2.0)
    return sigma * rng.standard_normal(n)


def synthetic(kind, step_name, noise_name, seed):
    """One series of anomaly type `kind`: values, label windows, description."""
    rng = np.random.default_rng(seed)
    step, n = STEPS[step_name]
    period = DAY // step  # points per day
    level = float(rng.choice([5.0, 50.0, 200.0, 1000.0]))
    sigma = NOISE[noise_name] * level
    # daily seasonality: always for seasonal_break, otherwise sometimes
    if kind == "seasonal_break":
        amplitude = float(rng.uniform(0.15, 0.4)) * level
    else:
        amplitude = float(rng.choice([0.0, 0.0, 0.1, 0.25])) * level
    amplitude = max(amplitude, 5 * sigma) if amplitude > 0 else 0.0
    t = np.arange(n)
    phase = 2 * np.pi * t / period
    season = amplitude * (np.sin(phase) + 0.3 * np.sin(2 * phase + 1.0))
    base = level + season
    eps = noise(rng, noise_name, n, sigma)
    probation = int(PROBATION * n)
    windows = []

    # anomaly count and onsets: spread after probation (seasonal breaks after two days)
    first = probation + 20
    if kind == "seasonal_break":
        first = max(first, 2 * period + period // 8)
    count = {"spike": 4, "level_shift": 3, "variance_change": 2, "trend_change": 2, "seasonal_break": 2,
             "flatline": 3, "drift": 2}[kind]
    usable = n - first - 40
    slot = usable // count

    values = base + eps
    offset = np.zeros(n)  # accumulated level changes (persist)
    for k in range(count):
        onset = first + k * slot + int(rng.integers(0, max(1, slot // 4)))
        room = first + (k + 1) * slot - onset - 10  # points before the next slot starts
        sign = float(rng.choice([-1.0, 1.0]))
        if kind == "spike":
            width = int(rng.choice([1, 1, 2]))
            size = float(rng.uniform(4.0, 9.0)) * sigma
            values[onset:onset + width] += sign * size
            windows.append({"start": onset, "end": onset + 5, "ignore_after": 5, "size_sigma": size / sigma})
        elif kind == "level_shift":
            size = float(rng.uniform(3.0, 7.0)) * sigma
            offset[onset:] += sign * size
            windows.append({"start": onset, "end": onset + 60, "ignore_after": 0, "size_sigma": size / sigma})
        elif kind == "variance_change":
            length = int(min(room, rng.integers(150, 300)))
            factor = float(rng.uniform(3.0, 5.0))
            values[onset:onset + length] += (factor - 1) * eps[onset:onset + length]
            windows.append({"start": onset, "end": onset + length, "ignore_after": 20, "factor": factor})
        elif kind == "trend_change":
            # a new slope: 5-8 sigma away from the old course after 100 points; it persists
            per_point = float(rng.uniform(5.0, 8.0)) * sigma / 100
            ramp = np.clip(t - onset, 0, None) * per_point * sign
            offset += ramp
            windows.append({"start": onset, "end": onset + 150, "ignore_after": 0,
                            "slope_sigma_per_100": per_point * 100 / sigma})
        elif kind == "seasonal_break":
            # for half a day the daily pattern is shifted by 6-12 h (the level stays in range)
            length = period // 2
            shift = int(rng.integers(period // 4, period // 2 + 1))
            shifted = amplitude * (np.sin(phase + 2 * np.pi * shift / period)
                                   + 0.3 * np.sin(2 * (phase + 2 * np.pi * shift / period) + 1.0))
            values[onset:onset + length] += shifted[onset:onset + length] - season[onset:onset + length]
            windows.append({"start": onset, "end": onset + length, "ignore_after": 20,
                            "shift_hours": shift * step / 3600})
        elif kind == "flatline":
            length = int(min(room, rng.integers(30, 150)))
            windows.append({"start": onset, "end": onset + length, "ignore_after": 20, "length": length})
        elif kind == "drift":
            # a slow ramp to 5-10 sigma over 300-600 points (150-300 hourly), then it stays
            length = int(min(room, rng.integers(300, 600) if step < 3600 else rng.integers(150, 300)))
            size = float(rng.uniform(5.0, 10.0)) * sigma
            offset += np.clip((t - onset) / length, 0, 1) * size * sign
            windows.append({"start": onset, "end": onset + length, "ignore_after": 0, "size_sigma": size / sigma})
    values = values + offset
    if kind == "flatline":
        for w in windows:  # stuck sensor: the last good value repeats
            values[w["start"]:w["end"] + 1] = values[w["start"] - 1]
    # positive quantities stay positive (a level of 5 with high noise could dip below 0)
    values = np.maximum(values, 0.0)
    for w in windows:
        w["end"] = min(w["end"], n - 1)
    timestamps = START + step * t
    description = {"level": level, "sigma": sigma, "seasonal_amplitude": amplitude, "step_seconds": step}
    return timestamps, values, windows, probation, description


def simulator_series(binary, seed):
    """Per-minute metrics of one simulated fleet, one series per incident."""
    scenarios = ",".join(SIM_METRICS)
    labels_path = f"/tmp/inferwatch-univariate-sim-{seed}.labels.jsonl"
    proc = subprocess.Popen([binary, "simulate", "--scenario", scenarios, "--duration", "12h", "--rate", "10",
                             "--seed", str(seed), "--output", "-", "--labels", labels_path],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1 << 20)
    wanted = {model for model, _ in SIM_METRICS.values()}
    # minute -> model -> [count, errors, latencies, input tokens]
    minutes = defaultdict(lambda: {m: [0, 0, [], 0] for m in wanted})
    for line in proc.stdout:
        event = json.loads(line)
        model = event.get("model_id")
        if model not in wanted:
            continue
        ts = event["timestamp"]
        minute = ts[:16]  # YYYY-MM-DDTHH:MM
        cell = minutes[minute][model]
        cell[0] += 1
        cell[1] += event.get("status") == "error"
        if event.get("latency_ms") is not None:
            cell[2].append(event["latency_ms"])
        cell[3] += event.get("input_tokens") or 0
    if proc.wait() != 0:
        sys.exit(f"simulate failed for seed {seed}")
    labels = [json.loads(line) for line in open(labels_path)]
    os.unlink(labels_path)
    keys = sorted(minutes)
    epoch = np.array([np.datetime64(k + ":00", "s").astype(np.int64) for k in keys])
    out = []
    for label in labels:
        model, metric = SIM_METRICS[label["scenario"]]
        cells = [minutes[k][model] for k in keys]
        if metric == "requests":
            values = np.array([c[0] for c in cells], float)
        elif metric == "error_rate":
            values = np.array([c[1] / c[0] if c[0] else 0.0 for c in cells])
        elif metric == "p95_latency_ms":
            values = np.array([np.percentile(c[2], 95) if c[2] else np.nan for c in cells])
        else:
            values = np.array([c[3] / c[0] if c[0] else np.nan for c in cells])
        start = np.datetime64(label["start"].rstrip("Z"), "s").astype(np.int64)
        end = np.datetime64(label["end"].rstrip("Z"), "s").astype(np.int64)
        first = int(np.searchsorted(epoch, start))
        last = int(np.searchsorted(epoch, end)) - 1
        windows = [{"start": first, "end": last, "ignore_after": 5}]
        out.append((label["scenario"], model, metric, epoch, values, windows))
    return out


def write_series(out_dir, series_id, timestamps, values, windows, probation, meta):
    with open(f"{out_dir}/series/{series_id}.csv", "w") as f:
        f.write("timestamp,value\n")
        for ts, v in zip(timestamps, values):
            f.write(f"{int(ts)},{'' if np.isnan(v) else format(float(v), '.6g')}\n")
    for w in windows:
        w["start_timestamp"] = int(timestamps[w["start"]])
        w["end_timestamp"] = int(timestamps[w["end"]])
    label = {"id": series_id, "points": len(values), "probation": probation, "windows": windows, **meta}
    with open(f"{out_dir}/labels/{series_id}.json", "w") as f:
        json.dump(label, f, indent=1)
    return {k: label[k] for k in ("id", "points", "probation", "type", "half", "seed")} | {
        "windows": len(windows), **{k: meta[k] for k in ("step", "noise") if k in meta}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--bin", help="inferwatch binary, for the simulator series")
    args = parser.parse_args()
    os.makedirs(f"{args.out}/series", exist_ok=True)
    os.makedirs(f"{args.out}/labels", exist_ok=True)
    entries = []
    seed = 1000
    for kind in TYPES:
        for step_name in STEPS:
            for noise_name in NOISE:
                for k in range(SEEDS_PER_COMBINATION):
                    seed += 1
                    half = "development" if k == 0 else "held_back"
                    ts, values, windows, probation, desc = synthetic(kind, step_name, noise_name, seed)
                    series_id = f"{kind}-{step_name}-{noise_name}-s{seed}"
                    meta = {"type": kind, "half": half, "seed": seed, "step": step_name, "noise": noise_name, **desc}
                    entries.append(write_series(args.out, series_id, ts, values, windows, probation, meta))
    notes = []
    if args.bin:
        for sim_seed, half in SIM_SEEDS.items():
            for scenario, model, metric, epoch, values, windows in simulator_series(args.bin, sim_seed):
                series_id = f"sim-{scenario}-{metric}-s{sim_seed}"
                meta = {"type": "simulator", "half": half, "seed": sim_seed, "step": "1min", "noise": "simulated",
                        "scenario": scenario, "model_id": model, "metric": metric}
                entries.append(write_series(args.out, series_id, epoch, values, windows, int(PROBATION * len(values)),
                                            meta))
    else:
        notes.append("no --bin: simulator series left out")
    metadata = {
        "generator": "bench/univariate/corpus.py",
        "split": {
            "rule": "synthetic: each (type, step, noise) combination has two seeds; the lower seed is development, "
                    "the higher held back. simulator: seeds 101 and 103 development, 102 and 104 held back. "
                    "Fixed before any tuning.",
            "development_seeds": sorted(e["seed"] for e in entries if e["half"] == "development"),
            "held_back_seeds": sorted(e["seed"] for e in entries if e["half"] == "held_back"),
        },
        "types": TYPES + (["simulator"] if args.bin else []),
        "steps": {k: {"seconds": v[0], "points": v[1]} for k, v in STEPS.items()},
        "noise_sigma_over_level": NOISE,
        "probation": PROBATION,
        "notes": notes,
        "series": entries,
    }
    with open(f"{args.out}/metadata.json", "w") as f:
        json.dump(metadata, f, indent=1)
    by_half = defaultdict(int)
    for e in entries:
        by_half[e["half"]] += 1
    print(f"corpus: {len(entries)} series ({dict(by_half)}), {sum(e['points'] for e in entries):,} points, "
          f"{sum(e['windows'] for e in entries)} anomaly windows -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
