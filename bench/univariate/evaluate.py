#!/usr/bin/env python3
"""`inferwatch score` against River, ADTK and scikit-learn on the labelled corpus.

Usage: evaluate.py CORPUS_DIR OUT_DIR --bin INFERWATCH [--inferwatch auto,ewma,...]
                   [--peers hst,hst_shingle,iforest,adtk] [--jobs 2] [--cache DIR]

Every detector gives every point of every series a score (higher = more
anomalous), using only that point and earlier ones:

* inferwatch_<detector>: `inferwatch score --detector <detector>`.
* hst / hst_shingle: River's HalfSpaceTrees (defaults: 10 trees, height 8,
  window 250) behind River's streaming MinMaxScaler, on the value alone /
  on shingles of the last 8 values; score_one then learn_one.
* iforest: scikit-learn's IsolationForest (100 trees) on shingles of the
  last 8 values, refitted every 100 points on the trailing 1,000 shingles;
  each shingle is scored by the last model fitted before it (none is scored
  by a model that saw it). 0 until the first fit (after 256 shingles).
* adtk_persist, adtk_level_shift, adtk_volatility, adtk_seasonal: ADTK's
  PersistAD (median of the last 10 points), LevelShiftAD (medians of two
  adjacent 10-point windows), VolatilityShiftAD (standard deviations of two
  adjacent 30-point windows) and SeasonalAD (ClassicSeasonalDecomposition,
  daily period) transforms, made streaming: the rolling windows end at the
  point (ADTK's center=False), and the seasonal template is refitted once
  a day on whole past days (from two days on). ADTK's InterQuartileRangeAD
  flags y outside [Q1 - c IQR, Q3 + c IQR]; the score here is the c at which
  a point would be flagged, with Q1 and Q3 of the past transformed values
  (recomputed every 25 points), so the one threshold is ADTK's c.
  adtk = the largest of the four (ADTK's OrAggregator with one c).

Judging (see corpus.py for the windows): the first 15 % of each series is
not judged. A window is detected if the score crosses the threshold (a
rising edge of score >= threshold) at a point inside it; the delay is the
rows from the window's start to that point. A score already above the
threshold when the window starts does not count: a detector that stays on
detects nothing.
A false positive is a rising edge of (score >= threshold) outside every
window and its `ignore_after` tail. Precision = detected windows /
(detected windows + false positives), recall = detected / windows, F1 their
harmonic mean (micro over the corpus, or over one type's series). One
threshold per detector for the whole corpus: the one with the best F1 on the
development half; everything reported is on the held-back half.

Peer scores are cached in --cache (default OUT_DIR/univariate-cache), keyed
by series, its bytes and the peer version; inferwatch scores are never cached.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

PEER_VERSION = "1"
ALL_PEERS = ["hst", "hst_shingle", "iforest", "adtk"]
ADTK_PARTS = ["adtk_persist", "adtk_level_shift", "adtk_volatility", "adtk_seasonal"]


def load_series(corpus, series_id):
    timestamps, values = [], []
    with open(f"{corpus}/series/{series_id}.csv") as f:
        next(f)
        for line in f:
            ts, value = line.rstrip("\n").split(",")
            timestamps.append(int(ts))
            values.append(float(value) if value else np.nan)
    return np.array(timestamps), np.array(values)


def filled(values):
    """Missing values carried forward (peers cannot take NaN); leading ones take the first value."""
    out = values.copy()
    mask = np.isnan(out)
    if mask.all():
        return np.zeros_like(out)
    idx = np.where(~mask, np.arange(len(out)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = out[idx]
    out[np.isnan(out)] = out[~np.isnan(out)][0]
    return out


def shingles(values, size=8):
    padded = np.concatenate([np.full(size - 1, values[0]), values])
    return np.lib.stride_tricks.sliding_window_view(padded, size)


# ---------------------------------------------------------------- peers

def peer_hst(values, shingle):
    from river import anomaly, compose, preprocessing
    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42))
    rows = shingles(values) if shingle else values[:, None]
    names = [f"x{j}" for j in range(rows.shape[1])]
    out = np.zeros(len(values))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, row in enumerate(rows):
            features = dict(zip(names, row.tolist()))
            out[i] = model.score_one(features)
            model.learn_one(features)
    return out


def peer_iforest(values, refit_every=100, trailing=1000, first_fit=256):
    from sklearn.ensemble import IsolationForest
    rows = shingles(values)
    out = np.zeros(len(values))
    model = None
    for start in range(0, len(values), refit_every):
        if start >= first_fit:
            model = IsolationForest(n_estimators=100, random_state=0).fit(rows[max(0, start - trailing):start])
        if model is not None:
            out[start:start + refit_every] = -model.score_samples(rows[start:start + refit_every])
    return out


def iqr_score(y, every=25, min_past=30):
    """The c at which ADTK's InterQuartileRangeAD would flag each point, from past quartiles only."""
    out = np.zeros(len(y))
    q1 = q3 = None
    finite = np.isfinite(y)
    for start in range(0, len(y), every):
        past = y[:start][finite[:start]]
        if len(past) >= min_past:
            q1, q3 = np.percentile(past, [25, 75])
        if q1 is None:
            continue
        iqr = max(q3 - q1, 1e-9 + 1e-6 * abs((q1 + q3) / 2))
        chunk = y[start:start + every]
        score = np.maximum((chunk - q3) / iqr, (q1 - chunk) / iqr)
        out[start:start + every] = np.where(np.isfinite(score), np.maximum(score, 0), 0)
    return np.minimum(out, 1e6)


def peer_adtk(timestamps, values):
    import pandas as pd
    from adtk.transformer import ClassicSeasonalDecomposition, DoubleRollingAggregate
    index = pd.to_datetime(timestamps, unit="s")
    s = pd.Series(values, index=index)
    parts = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        persist = DoubleRollingAggregate(agg="median", window=(10, 1), center=False, diff="diff").transform(s)
        parts["adtk_persist"] = iqr_score(persist.to_numpy(float))
        level = DoubleRollingAggregate(agg="median", window=10, center=False, diff="diff").transform(s)
        parts["adtk_level_shift"] = iqr_score(level.to_numpy(float))
        volatility = DoubleRollingAggregate(agg="std", window=30, center=False, diff="diff").transform(s)
        parts["adtk_volatility"] = iqr_score(volatility.to_numpy(float))
        step = int(np.median(np.diff(timestamps)))
        period = max(2, 86400 // step)
        residual = np.full(len(values), np.nan)
        regular = pd.Series(values, index=pd.date_range(index[0], periods=len(values), freq=f"{step}s"))
        for start in range(2 * period, len(values), period):
            decomposition = ClassicSeasonalDecomposition(freq=period)
            decomposition.fit(regular.iloc[:start])
            residual[start:start + period] = decomposition.transform(regular.iloc[start:start + period]).to_numpy()
        parts["adtk_seasonal"] = iqr_score(residual)
    parts["adtk"] = np.max(np.vstack([parts[name] for name in ADTK_PARTS]), axis=0)
    return parts


def run_peer(job):
    corpus, cache, series_id, peer = job
    # keyed by the series' bytes too: a regenerated corpus never reads stale scores
    digest = hashlib.sha256(open(f"{corpus}/series/{series_id}.csv", "rb").read()).hexdigest()[:12]
    path = f"{cache}/{peer}-v{PEER_VERSION}/{series_id}-{digest}.npz"
    if os.path.exists(path):
        return series_id, peer, dict(np.load(path))
    timestamps, raw = load_series(corpus, series_id)
    values = filled(raw)
    if peer == "hst":
        result = {"hst": peer_hst(values, shingle=False)}
    elif peer == "hst_shingle":
        result = {"hst_shingle": peer_hst(values, shingle=True)}
    elif peer == "iforest":
        result = {"iforest": peer_iforest(values)}
    elif peer == "adtk":
        result = peer_adtk(timestamps, values)
    else:
        raise ValueError(peer)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, **result)
    return series_id, peer, result


def run_inferwatch(job):
    binary, corpus, series_id, detector = job
    proc = subprocess.run([binary, "score", "--detector", detector, f"{corpus}/series/{series_id}.csv"],
                          capture_output=True, text=True, check=True)
    scores = np.array([float(line.rsplit(",", 1)[1]) for line in proc.stdout.splitlines()[1:]])
    return series_id, f"inferwatch_{detector}", {f"inferwatch_{detector}": scores}


# ---------------------------------------------------------------- judging

def judge(scores, label, threshold):
    """(delays per window, None if missed; false positives; judged points)."""
    n = len(scores)
    probation = label["probation"]
    above = scores >= threshold
    rising = above & ~np.concatenate([[False], above[:-1]])
    rising[:probation] = False
    excluded = np.zeros(n, bool)
    delays = []
    for w in label["windows"]:
        a, b = w["start"], w["end"]
        excluded[a:min(n, b + 1 + w.get("ignore_after", 0))] = True
        hits = np.flatnonzero(rising[a:b + 1])
        delays.append(int(hits[0]) if len(hits) else None)
    false_positives = int((rising & ~excluded).sum())
    return delays, false_positives, n - probation


def summarise(results):
    """results: list of (label, delays, fp, points) -> metrics."""
    windows = sum(len(d) for _, d, _, _ in results)
    detected = [x for _, d, _, _ in results for x in d if x is not None]
    fp = sum(f for _, _, f, _ in results)
    points = sum(p for _, _, _, p in results)
    tp = len(detected)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / windows if windows else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"windows": windows, "detected": tp, "false_positives": fp, "points": points,
            "precision": precision, "recall": recall, "f1": f1,
            "fp_per_1000": 1000 * fp / points if points else 0.0,
            "median_delay": float(np.median(detected)) if detected else None,
            "mean_delay": float(np.mean(detected)) if detected else None}


def evaluate_at(labels, scores, threshold, ids):
    return [(labels[i], *judge(scores[i], labels[i], threshold)) for i in ids]


def candidate_thresholds(scores, labels, ids):
    pooled = np.concatenate([scores[i][labels[i]["probation"]:] for i in ids])
    pooled = pooled[np.isfinite(pooled)]
    levels = np.concatenate([np.linspace(0.5, 0.99, 50), 1 - np.logspace(-2, -5.5, 120)])
    return np.unique(np.quantile(pooled, levels))


def by_type(results):
    types = sorted({label["type"] for label, *_ in results})
    return {t: summarise([r for r in results if r[0]["type"] == t]) for t in types}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("out")
    parser.add_argument("--bin", required=True)
    parser.add_argument("--inferwatch", default="auto")
    parser.add_argument("--peers", default=",".join(ALL_PEERS), help="comma separated, or 'none'")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache")
    parser.add_argument("--dev-only", action="store_true", help="print development-half results only (for tuning)")
    args = parser.parse_args()
    cache = args.cache or f"{args.out}/univariate-cache"
    metadata = json.load(open(f"{args.corpus}/metadata.json"))
    ids = [entry["id"] for entry in metadata["series"]]
    labels = {i: json.load(open(f"{args.corpus}/labels/{i}.json")) for i in ids}
    dev = [i for i in ids if labels[i]["half"] == "development"]
    held = [i for i in ids if labels[i]["half"] == "held_back"]
    peers = [] if args.peers == "none" else args.peers.split(",")
    detectors = [d for d in args.inferwatch.split(",") if d]

    scores = {}  # detector -> series -> array
    jobs_iw = [(args.bin, args.corpus, i, d) for d in detectors for i in ids]
    jobs_peer = [(args.corpus, cache, i, p) for p in peers for i in ids]
    with ProcessPoolExecutor(args.jobs) as pool:
        for fn, jobs in ((run_inferwatch, jobs_iw), (run_peer, jobs_peer)):
            for done, (series_id, _, result) in enumerate(pool.map(fn, jobs, chunksize=1), 1):
                for name, values in result.items():
                    scores.setdefault(name, {})[series_id] = values
                if done % 50 == 0:
                    print(f"  {fn.__name__}: {done}/{len(jobs)}", file=sys.stderr)
    for name, per_series in scores.items():
        for i in ids:
            assert len(per_series[i]) == labels[i]["points"], (name, i)

    report = {"corpus": {"series": len(ids), "development": len(dev), "held_back": len(held),
                         "points": sum(labels[i]["points"] for i in ids),
                         "windows_held_back": sum(len(labels[i]["windows"]) for i in held)},
              "detectors": {}}
    for name in sorted(scores, key=lambda n: (not n.startswith("inferwatch"), n)):
        s = scores[name]
        best = None
        for threshold in candidate_thresholds(s, labels, dev):
            metrics = summarise(evaluate_at(labels, s, threshold, dev))
            if best is None or metrics["f1"] > best[1]["f1"] + 1e-12:
                best = (float(threshold), metrics)
        threshold, dev_metrics = best
        dev_results = evaluate_at(labels, s, threshold, dev)
        held_results = evaluate_at(labels, s, threshold, held)
        report["detectors"][name] = {
            "threshold": threshold,
            "development": {"all": dev_metrics, "by_type": by_type(dev_results)},
            "held_back": {"all": summarise(held_results), "by_type": by_type(held_results)},
        }
    os.makedirs(args.out, exist_ok=True)
    versions = {}
    for module in ("numpy", "pandas", "sklearn", "river", "adtk", "statsmodels"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a peer left out
            pass
    report["versions"] = versions
    half = "development" if args.dev_only else "held_back"
    table = markdown(report, half)
    if not args.dev_only:
        json.dump(report, open(f"{args.out}/univariate.json", "w"), indent=1)
        open(f"{args.out}/univariate.md", "w").write(table)
    print(table)


def markdown(report, half):
    dets = report["detectors"]
    names = list(dets)
    peers = [n for n in names if not n.startswith("inferwatch")]
    lines = [f"Univariate corpus, {half.replace('_', '-')} half ({report['corpus']['series']} series in all, "
             f"{report['corpus']['points']:,} points); one threshold per detector, chosen on the development half.",
             "", "| detector | threshold | F1 | recall | precision | FP/1000 | median delay (rows) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    fmt_delay = lambda d: "-" if d is None else f"{d:.0f}"
    for n in names:
        m = dets[n][half]["all"]
        lines.append(f"| {n} | {dets[n]['threshold']:.4g} | {m['f1']:.3f} | {m['recall']:.3f} | {m['precision']:.3f} "
                     f"| {m['fp_per_1000']:.2f} | {fmt_delay(m['median_delay'])} |")
    if peers:
        best_peer = max(peers, key=lambda n: dets[n][half]["all"]["f1"])
        lines += ["", f"Best peer overall: {best_peer} (F1 {dets[best_peer][half]['all']['f1']:.3f})."]
    types = list(next(iter(dets.values()))[half]["by_type"])
    lines += ["", "F1 / recall / FP per 1000 / median delay (rows), per anomaly type:", "",
              "| type | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for t in types:
        cells = []
        for n in names:
            m = dets[n][half]["by_type"][t]
            cells.append(f"{m['f1']:.2f} / {m['recall']:.2f} / {m['fp_per_1000']:.1f} / {fmt_delay(m['median_delay'])}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
