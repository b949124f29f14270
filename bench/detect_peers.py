#!/usr/bin/env python3
"""Three rules of the default pack, written for the peers: DuckDB SQL and pandas.

The subset is the pack's rules that a peer can reproduce exactly, alert for
alert: `error-rate`, `volume-drop` and `canary-vs-baseline` (rules/*.yaml of
the same names). The learned baselines, drift tests and the forest need the
engine's own state (EWMA spreads, sketches, a calibrated threshold); `bench/run
detectors` compares those with scipy and scikit-learn separately.

Each peer computes, per rule, the same sliding-window aggregates that
`inferwatch detect` evaluates (a tick every minute over the window before
it), then applies the same conditions and `for` hold times. It prints one
JSON object: events, seconds (load + detect), and the firing transitions it
found as (rule, group, start minute), which the harness checks against
inferwatch's alerts.

Usage: detect_peers.py duckdb|pandas EVENTS.jsonl
"""
import json
import sys
import time

def held(rows, condition, for_minutes):
    """rows: {group: {tick: values}} -> {group: set of ticks where `condition` has held for `for_minutes`}."""
    out = {}
    for group, by_tick in rows.items():
        if not by_tick:
            continue
        since = None
        satisfied = set()
        for tick in range(min(by_tick), max(by_tick) + 1):
            values = by_tick.get(tick)
            if values is not None and condition(values):
                since = tick if since is None else since
                if tick - since >= for_minutes:
                    satisfied.add(tick)
            else:
                since = None
        out[group] = satisfied
    return out


def rising_edges(*arms):
    """Firing transitions of the OR of several held arms: (group, tick) where it becomes true."""
    groups = set().union(*(arm.keys() for arm in arms))
    fired = []
    for group in groups:
        ticks = set().union(*(arm.get(group, set()) for arm in arms))
        fired.extend((group, tick) for tick in sorted(ticks) if tick - 1 not in ticks)
    return fired


def hold(rows, condition, for_minutes):
    return rising_edges(held(rows, condition, for_minutes))


def transitions_from(tables):
    """tables: dict of rule-shaped rows -> list of (rule, group, tick)."""
    out = []
    per_version = tables["per_version"]  # {(model, version): {tick: (n, error_rate)}}
    for group, tick in hold(per_version, lambda v: v[1] > 0.05 and v[0] >= 200, 2):
        out.append(("error-rate", group, tick))
    volume = tables["volume"]  # {(model, version): {tick: n}} over 2m windows
    for group, tick in hold(volume, lambda n: n == 0, 1):
        out.append(("volume-drop", group, tick))
    canary = tables["canary"]  # {model: {tick: (canary_n, canary_p99, canary_err, baseline_err)}}
    latency_arm = held(canary, lambda v: v[0] >= 100 and v[1] > 500, 5)
    error_arm = held(canary, lambda v: v[0] >= 100 and v[3] == v[3] and v[3] is not None and v[2] > 2 * v[3] + 0.01, 3)
    for group, tick in rising_edges(latency_arm, error_arm):
        out.append(("canary-vs-baseline", group, tick))
    return out


def dense_volume(per_minute_counts, window):
    """Counts over `window` minutes at every tick between a group's first and last event (zeros included)."""
    out = {}
    for group, minutes in per_minute_counts.items():
        first, last = min(minutes), max(minutes)
        out[group] = {
            tick: sum(minutes.get(m, 0) for m in range(tick - window, tick))
            for tick in range(first + 1, last + 1)
        }
    return out


COLUMNS = "{timestamp:'VARCHAR', model_id:'VARCHAR', model_version:'VARCHAR', ab_group:'VARCHAR', status:'VARCHAR', latency_ms:'DOUBLE'}"


def run_duckdb(path):
    import duckdb

    con = duckdb.connect()
    con.execute(
        f"""CREATE TABLE ev AS SELECT
              CAST(epoch_ms(CAST(timestamp AS TIMESTAMP)) // 60000 AS BIGINT) AS minute,
              model_id, model_version, ab_group, status = 'error' AS failed, latency_ms
            FROM read_ndjson('{path}', columns={COLUMNS})"""
    )
    events = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    per_version = {}
    for model, version, tick, n, err in con.execute(
        """SELECT model_id, model_version, minute + k AS tick, count(*), avg(failed::INT)
           FROM ev, range(1, 6) r(k) GROUP BY ALL"""
    ).fetchall():
        per_version.setdefault((model, version), {})[tick] = (n, err)
    per_minute = {}
    for model, version, minute, n in con.execute(
        "SELECT model_id, model_version, minute, count(*) FROM ev GROUP BY ALL"
    ).fetchall():
        per_minute.setdefault((model, version), {})[minute] = n
    canary = {}
    for model, tick, cn, cp99, cerr, berr in con.execute(
        """SELECT model_id, minute + k AS tick,
                  count(*) FILTER (WHERE ab_group = 'canary'),
                  quantile_cont(latency_ms, 0.99) FILTER (WHERE ab_group = 'canary'),
                  avg(failed::INT) FILTER (WHERE ab_group = 'canary'),
                  avg(failed::INT) FILTER (WHERE ab_group = 'baseline')
           FROM ev, range(1, 6) r(k) GROUP BY ALL HAVING count(*) FILTER (WHERE ab_group = 'canary') > 0"""
    ).fetchall():
        canary.setdefault((model,), {})[tick] = (cn, cp99, cerr, berr)
    tables = {"per_version": per_version, "volume": dense_volume(per_minute, 2), "canary": canary}
    return events, tables


def run_pandas(path):
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.json as pj

    schema = pa.schema([
        ("timestamp", pa.string()), ("model_id", pa.string()), ("model_version", pa.string()), ("ab_group", pa.string()),
        ("status", pa.string()), ("latency_ms", pa.float64()),
    ])
    table = pj.read_json(path, parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
    import pyarrow.compute as pc

    millis = pc.cast(pc.cast(table["timestamp"], pa.timestamp("ms", tz="UTC")), pa.int64())
    table = table.drop_columns(["timestamp"]).append_column("minute", pc.divide(millis, 60_000))
    df = table.to_pandas()
    events = len(df)
    df["failed"] = (df["status"] == "error").astype("int8")
    for key in ("model_id", "model_version", "ab_group"):
        df[key] = df[key].astype("category")

    def replicate(frame, window):
        parts = [frame.assign(tick=frame["minute"] + k) for k in range(1, window + 1)]
        return pd.concat(parts, ignore_index=True)

    slim = df[["model_id", "model_version", "ab_group", "minute", "failed", "latency_ms"]]
    wide = replicate(slim, 5)
    grouped = wide.groupby(["model_id", "model_version", "tick"], observed=True)
    agg = pd.DataFrame({"n": grouped.size(), "err": grouped["failed"].mean()})
    per_version = {}
    for (model, version, tick), row in agg.iterrows():
        per_version.setdefault((model, version), {})[tick] = (row["n"], row["err"])
    counts = slim.groupby(["model_id", "model_version", "minute"], observed=True).size()
    per_minute = {}
    for (model, version, minute), n in counts.items():
        per_minute.setdefault((model, version), {})[minute] = n
    canary_rows = wide[wide["ab_group"] == "canary"].groupby(["model_id", "tick"], observed=True)
    base = wide[wide["ab_group"] == "baseline"].groupby(["model_id", "tick"], observed=True)["failed"].mean()
    cagg = pd.DataFrame({"n": canary_rows.size(), "p99": canary_rows["latency_ms"].quantile(0.99), "err": canary_rows["failed"].mean()})
    canary = {}
    for (model, tick), row in cagg.iterrows():
        canary.setdefault((model,), {})[tick] = (row["n"], row["p99"], row["err"], base.get((model, tick), np.nan))
    tables = {"per_version": per_version, "volume": dense_volume(per_minute, 2), "canary": canary}
    return events, tables


def main():
    engine, path = sys.argv[1], sys.argv[2]
    started = time.perf_counter()
    events, tables = (run_duckdb if engine == "duckdb" else run_pandas)(path)
    transitions = transitions_from(tables)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "engine": engine,
        "events": events,
        "seconds": seconds,
        "events_per_second": events / seconds,
        "firing": sorted([rule, [str(value) for value in group], int(tick)] for rule, group, tick in transitions),
    }))


if __name__ == "__main__":
    main()
