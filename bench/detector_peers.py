#!/usr/bin/env python3
"""The learned detectors, written for the peers: scipy and scikit-learn.

Loads the simulated JSONL once (pyarrow's JSON reader, columns the
detectors read only), then, on the same windows as `inferwatch detect`
(a tick every minute at multiples of 1 min, each over [tick - 5 min, tick)):

* drift (rules/source-confidence-drift.yaml): for every tick and every
  (model_id, source_id) with confidence values,
  scipy.stats.ks_2samp(this source's values, the other sources' values of
  the same model). Twice: on the full windows, and on samples capped at
  1,000 per side chosen like inferwatch's bottom-k (every row gets one
  fixed random rank; a side keeps its 1,000 lowest ranks). A group passes
  when D >= 0.2 and p <= 0.001 on >= 200 values per side (the rule's gates).
* forest (rules/client-behaviour-forest.yaml): for every tick, per client
  with >= 200 requests in the window, the rule's 7 features (signed-log
  scaled like inferwatch). An online isolation forest has no sklearn
  equivalent; the closest honest protocol is a refit per tick:
  IsolationForest(n_estimators=32, random_state=0) is fitted on a sliding
  memory of the last 2,048 learned vectors and scores the tick's vectors
  (score = -score_samples, i.e. 2^(-E[h]/c(n)), the same scale as
  inferwatch's); then up to 256 of the tick's vectors that scored < 0.6
  (the lowest (client, tick) hashes) are appended to the memory. Scoring
  starts once 512 vectors were learned, as inferwatch's warm-up.

Prints one JSON object with load and compute seconds per phase and what each
peer found. Usage: detector_peers.py EVENTS.jsonl LABELS.jsonl ALERTS.jsonl
"""
import json
import sys
import time
from collections import deque

import numpy as np

TICK_MS = 60_000
WINDOW_MS = 300_000
DRIFT_CAP = 1_000
DRIFT_MIN_SAMPLES = 200
DRIFT_MIN_EFFECT = 0.2
DRIFT_MAX_P = 0.001
FOREST_MIN_COUNT = 200
FOREST_MEMORY = 2_048
FOREST_WARMUP = 512
FOREST_LEARN_PER_TICK = 256
FOREST_THRESHOLD = 0.6


def iso_ms(text):
    import datetime as dt
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def load(path):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    schema = pa.schema([
        ("timestamp", pa.string()), ("model_id", pa.string()), ("client_id", pa.string()),
        ("source_id", pa.string()), ("status", pa.string()), ("latency_ms", pa.float64()),
        ("input_tokens", pa.float64()), ("input_hash", pa.string()), ("confidence", pa.float64()),
    ])
    table = pj.read_json(path, parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
    ms = pc.cast(pc.cast(table["timestamp"], pa.timestamp("ms", tz="UTC")), pa.int64()).to_numpy()

    def codes(name):
        encoded = pc.dictionary_encode(table[name]).combine_chunks()
        return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32), encoded.dictionary.to_pylist()

    model, models = codes("model_id")
    source, sources = codes("source_id")
    client, clients = codes("client_id")
    input_hash, _ = codes("input_hash")
    cols = {
        "ms": ms, "model": model, "source": source, "client": client, "input_hash": input_hash,
        "failed": pc.equal(table["status"], "error").to_numpy(zero_copy_only=False),
        "latency": table["latency_ms"].to_numpy(), "tokens": table["input_tokens"].to_numpy(),
        "confidence": pc.fill_null(table["confidence"], np.nan).to_numpy(),
    }
    if not np.all(np.diff(ms) >= 0):
        order = np.argsort(ms, kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    return cols, models, sources, clients


def ticks_of(ms):
    first = (ms[0] // TICK_MS + 1) * TICK_MS
    return np.arange(first, ms[-1] + 1, TICK_MS)


def drift(cols, ticks, cap):
    from scipy.stats import ks_2samp

    ms, model, source, conf = cols["ms"], cols["model"], cols["source"], cols["confidence"]
    rank = np.random.default_rng(0).random(len(ms)) if cap else None
    passing, tests = [], 0
    for tick in ticks:
        lo, hi = np.searchsorted(ms, [tick - WINDOW_MS, tick])
        c = conf[lo:hi]
        keep = ~np.isnan(c)
        c, m, s = c[keep], model[lo:hi][keep], source[lo:hi][keep]
        r = rank[lo:hi][keep] if cap else None
        for model_code in np.unique(m):
            in_model = m == model_code
            values, src = c[in_model], s[in_model]
            if cap:
                order = np.argsort(r[in_model], kind="stable")
                values, src = values[order], src[order]
            for source_code in np.unique(src):
                mine = src == source_code
                subject, reference = values[mine], values[~mine]
                if cap:
                    subject, reference = subject[:cap], reference[:cap]
                if len(subject) < DRIFT_MIN_SAMPLES or len(reference) < DRIFT_MIN_SAMPLES:
                    continue
                tests += 1
                result = ks_2samp(subject, reference)
                if result.statistic >= DRIFT_MIN_EFFECT and result.pvalue <= DRIFT_MAX_P:
                    passing.append((int(model_code), int(source_code), int(tick), float(result.statistic)))
    return passing, tests


def mix(a, b):
    """A 64-bit hash of two integer arrays (splitmix64 finaliser)."""
    x = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ b.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def features(cols, lo, hi, n_clients):
    import pandas as pd

    client = cols["client"][lo:hi]
    counts = np.bincount(client, minlength=n_clients)
    busy = counts >= FOREST_MIN_COUNT
    rows = busy[client]
    if not rows.any():
        return np.empty(0, np.int64), np.empty((0, 7))
    frame = pd.DataFrame({
        "client": client[rows], "input_hash": cols["input_hash"][lo:hi][rows],
        "tokens": cols["tokens"][lo:hi][rows], "confidence": cols["confidence"][lo:hi][rows],
        "failed": cols["failed"][lo:hi][rows], "latency": cols["latency"][lo:hi][rows],
    })
    g = frame.groupby("client", sort=True)
    n = g.size().to_numpy().astype(float)
    table = np.column_stack([
        g["confidence"].mean().to_numpy(),                # confidence_mean (features in name order,
        g["confidence"].std(ddof=1).to_numpy(),           # confidence_std   as inferwatch's BTreeMap)
        g["failed"].sum().to_numpy() / n,                 # error_rate
        g["tokens"].mean().to_numpy(),                    # mean_input_tokens
        g["latency"].quantile(0.95).to_numpy(),           # p95_latency
        n / (WINDOW_MS / 1000),                           # rate
        g["input_hash"].nunique().to_numpy() / n,         # unique_input_ratio
    ])
    table = np.where(np.isfinite(table), np.sign(table) * np.log1p(np.abs(table)), 0.0)
    return g.size().index.to_numpy(), table


def forest(cols, ticks, n_clients, watch):
    from sklearn.ensemble import IsolationForest

    ms = cols["ms"]
    memory = deque(maxlen=FOREST_MEMORY)
    learned = 0
    scored, fits = [], 0
    per_tick = []  # (tick, clients, scores)
    feature_seconds = 0.0
    for tick in ticks:
        lo, hi = np.searchsorted(ms, [tick - WINDOW_MS, tick])
        started = time.perf_counter()
        ids, X = features(cols, lo, hi, n_clients)
        feature_seconds += time.perf_counter() - started
        if len(ids) == 0:
            continue
        scores = None
        if learned >= FOREST_WARMUP:
            model = IsolationForest(n_estimators=32, random_state=0).fit(np.asarray(memory))
            fits += 1
            scores = -model.score_samples(X)
            per_tick.append((int(tick), ids, scores))
        learnable = np.ones(len(ids), bool) if scores is None else scores < FOREST_THRESHOLD
        candidates = np.flatnonzero(learnable)
        keys = mix(ids[candidates], np.full(len(candidates), tick // TICK_MS))
        chosen = candidates[np.argsort(keys, kind="stable")[:FOREST_LEARN_PER_TICK]]
        for i in chosen:
            memory.append(X[i])
        learned += len(chosen)
    return per_tick, fits, feature_seconds


def inferwatch_holding(alerts_path, rule_id):
    """(group tuple, tick ms) pairs where a rule without `for` held, from its firing/resolved transitions."""
    spans = {}
    with open(alerts_path) as f:
        for line in f:
            alert = json.loads(line)
            if alert.get("rule_id") != rule_id:
                continue
            key = tuple(sorted(alert["group"].items()))
            if alert["state"] == "firing":
                spans.setdefault(key, []).append([iso_ms(alert["starts_at"]), None])
            elif alert["state"] == "resolved" and spans.get(key):
                spans[key][-1][1] = iso_ms(alert["ends_at"]) if alert.get("ends_at") else None
    return spans


def main():
    path, labels_path, alerts_path = sys.argv[1:4]
    out = {}
    started = time.perf_counter()
    cols, models, sources, clients = load(path)
    out["events"] = int(len(cols["ms"]))
    out["load_seconds"] = time.perf_counter() - started
    ticks = ticks_of(cols["ms"])
    out["ticks"] = int(len(ticks))
    labels = [json.loads(line) for line in open(labels_path)]
    last_ms = int(cols["ms"][-1])

    # --- drift ---------------------------------------------------------------
    iw_spans = inferwatch_holding(alerts_path, "source-confidence-drift")
    iw_held = set()
    for key, spans in iw_spans.items():
        group = dict(key)
        for start, end in spans:
            for tick in range(start, (end if end else last_ms) , TICK_MS):
                iw_held.add((group["model_id"], group["source_id"], tick))
    out["inferwatch_drift"] = {
        "firing_alerts": sum(len(s) for s in iw_spans.values()),
        "groups": sorted("/".join(v for _, v in k) for k in iw_spans),
        "holding_ticks": len(iw_held),
        "first_fire": {"/".join(v for _, v in k): min(s[0] for s in spans) for k, spans in iw_spans.items()},
    }
    for name, cap in (("scipy_drift_full", None), ("scipy_drift_cap1000", DRIFT_CAP)):
        started = time.perf_counter()
        passing, tests = drift(cols, ticks, cap)
        seconds = time.perf_counter() - started
        held = {(models[m], sources[s], t) for m, s, t, _ in passing}
        groups = {}
        for m, s, t, d in passing:
            groups.setdefault(f"{models[m]}/{sources[s]}", []).append(t)
        out[name] = {
            "compute_seconds": seconds, "ks_tests": tests, "passing_group_ticks": len(held),
            "groups": {g: {"ticks": len(ts), "first": min(ts), "last": max(ts)} for g, ts in sorted(groups.items())},
            "agree_with_inferwatch": len(held & iw_held),
            "only_peer": len(held - iw_held), "only_inferwatch": len(iw_held - held),
            "jaccard": len(held & iw_held) / max(1, len(held | iw_held)),
        }

    # --- forest --------------------------------------------------------------
    watch = "c-31337"
    watch_code = clients.index(watch) if watch in clients else -1
    started = time.perf_counter()
    per_tick, fits, feature_seconds = forest(cols, ticks, len(clients), watch_code)
    seconds = time.perf_counter() - started
    incident = next((l for l in labels if l["scenario"] == "extraction"), None)
    inc_lo, inc_hi = (iso_ms(incident["start"]), iso_ms(incident["end"])) if incident else (0, 0)
    top, present, above, scored_vectors = 0, 0, 0, 0
    watch_scores, top_elsewhere = [], []
    for tick, ids, scores in per_tick:
        scored_vectors += len(ids)
        above += int((scores >= FOREST_THRESHOLD).sum())
        where = np.flatnonzero(ids == watch_code)
        if inc_lo < tick <= inc_hi + WINDOW_MS and len(where):
            present += 1
            watch_scores.append(float(scores[where[0]]))
            top += int(np.argmax(scores) == where[0])
        elif len(where) == 0:
            top_elsewhere.append(float(scores.max()))
    # Other clients the refit forest scores >= 0.6, and those that would fire
    # under the rule's `for: 2m` (3 consecutive ticks at or above it).
    runs, longest = {}, {}
    for tick, ids, scores in per_tick:
        high = set(ids[(scores >= FOREST_THRESHOLD) & (ids != watch_code)].tolist())
        runs = {c: runs.get(c, 0) + 1 for c in high}
        for c, n in runs.items():
            longest[c] = max(longest.get(c, 0), n)
    out["sklearn_forest"] = {
        "other_clients_at_or_above_0_6": len(longest),
        "other_clients_that_would_fire_for_2m": sum(1 for n in longest.values() if n >= 3),
        "compute_seconds": seconds, "feature_seconds": feature_seconds, "fit_and_score_seconds": seconds - feature_seconds,
        "fits": fits, "scored_vectors": scored_vectors, "vectors_at_or_above_0_6": above,
        "incident": incident, "incident_ticks_with_c31337_scored": present,
        "incident_ticks_c31337_top": top,
        "c31337_score_min": min(watch_scores) if watch_scores else None,
        "c31337_score_max": max(watch_scores) if watch_scores else None,
        "max_score_outside_incident": max(top_elsewhere) if top_elsewhere else None,
    }
    forest_spans = inferwatch_holding(alerts_path, "client-behaviour-anomaly")
    out["inferwatch_forest"] = {
        "firing_alerts": sum(len(s) for s in forest_spans.values()),
        "groups": sorted("/".join(v for _, v in k) for k in forest_spans),
    }
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
