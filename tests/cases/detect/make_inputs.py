#!/usr/bin/env python3
"""Writes the input.jsonl of each detect golden case. Deterministic; rerun after editing.

Events are compact on purpose: the cases test engine semantics, not realism.
"""
import json, os, random
from datetime import datetime, timedelta, timezone

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
HERE = os.path.dirname(os.path.abspath(__file__))

def ts(seconds):
    return (START + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

def event(t, **fields):
    return {"timestamp": ts(t), **fields}

def write(case, events, raw_lines=()):
    os.makedirs(os.path.join(HERE, case), exist_ok=True)
    with open(os.path.join(HERE, case, "input.jsonl"), "w") as f:
        for e in events:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
        for line in raw_lines:
            f.write(line + "\n")

def steady(minutes, per_second=1, **fields):
    """One event per 1/per_second s for `minutes`; fields may be callables of (t)."""
    out = []
    for i in range(int(minutes * 60 * per_second)):
        t = i / per_second
        out.append(event(t, **{k: (v(t) if callable(v) else v) for k, v in fields.items()}))
    return out

rng = random.Random(7)
lat = lambda base: (lambda t: round(base * (0.8 + 0.4 * rng.random()), 1))

# 1. p99 threshold: slow between minutes 10 and 16.
write("threshold-fire-resolve", steady(30, model_id="recsys", model_version="2.0", status="ok",
      latency_ms=lambda t: round((900 if 600 <= t < 960 else 100) * (0.8 + 0.4 * rng.random()), 1)))

# 2. `for`: a 2-minute spike (too short for `for: 4m`) then a 10-minute one.
write("pending-needs-for", steady(40, model_id="fraud", model_version="1.3", status="ok",
      latency_ms=lambda t: 300.0 if (300 <= t < 420 or 1200 <= t < 1800) else 20.0))

# 3. keep_firing_for: same shape as 1 with a short dip.
write("keep-firing-for", steady(30, model_id="vision", model_version="3.2", status="ok",
      latency_ms=lambda t: 500.0 if 300 <= t < 600 else 50.0))

# 4. The seed's canary rule: v2.1 errs 10 % from minute 10 (v2.0 1 %).
canary = []
for i in range(30 * 60 * 2):
    t = i / 2
    version = "2.1" if i % 10 == 0 else "2.0"
    failing = (version == "2.1" and t >= 600 and (i // 10) % 10 == 0) or (version == "2.0" and i % 100 == 1)
    canary.append(event(t, model_id="recsys", model_version=version, status="error" if failing else "ok",
                        latency_ms=120.0))
write("canary-seed-rule", canary)

# 5. Volume drops to zero for one version.
both = steady(20, model_id="recsys", model_version="2.0", status="ok", latency_ms=100.0)
both += [e for e in steady(20, model_id="recsys", model_version="2.1", status="ok", latency_ms=100.0)
         if e["timestamp"] < ts(600)]
both.sort(key=lambda e: e["timestamp"])
write("volume-drop", both)

# 6. Distinct count: one client sweeps unique inputs from minute 5 to 15.
sweep = []
for i in range(20 * 60 * 4):
    t = i / 4
    if i % 2 == 0:
        sweep.append(event(t, model_id="vision", client_id="c-%02d" % (i % 7), input_hash="h%d" % (i % 5), status="ok", latency_ms=50.0))
    elif 300 <= t < 900:
        sweep.append(event(t, model_id="vision", client_id="c-attacker", input_hash="u%d" % i, status="ok", latency_ms=50.0))
write("distinct-sweep", sweep)

# 7. Late events: three events from minute 1 arrive after minute 20 and are dropped.
late = steady(25, model_id="fraud", model_version="1.3", status="ok", latency_ms=lambda t: 300.0 if 600 <= t < 900 else 20.0)
late = late[:1200] + [event(61 + k, model_id="fraud", model_version="1.3", status="ok", latency_ms=99999.0) for k in range(3)] + late[1200:]
write("late-events-dropped", late)

# 8. Bad input mixed with good: the good lines still raise the alert.
good = steady(20, model_id="recsys", model_version="2.0", status="ok",
              latency_ms=lambda t: 800.0 if 300 <= t < 900 else 100.0)
bad = ['{"timestamp":"2026-01-01T00:00:01Z","model_id":"recsys","latency_ms":', 'not json at all',
       '{"timestamp":"2026-01-01T00:00:02Z","model_id":"recsys","latency_ms":"fast"}',
       '{"model_id":"recsys","latency_ms":10}', '[1,2,3]',
       '{"timestamp":"yesterday","model_id":"recsys","latency_ms":10}',
       '{"timestamp":"2026-01-01T00:00:03Z","x":' + '[' * 70 + ']' * 70 + '}']
mixed = good[:200] + [None] * len(bad) + good[200:]
with_bad = []
bi = iter(bad)
lines = []
for e in mixed:
    lines.append(next(bi) if e is None else json.dumps(e, separators=(",", ":")))
os.makedirs(os.path.join(HERE, "bad-input-mixed"), exist_ok=True)
with open(os.path.join(HERE, "bad-input-mixed", "input.jsonl"), "w") as f:
    f.write("\n".join(lines) + "\n")

# 9. OpenTelemetry GenAI attribute names, token cost per client.
otel = []
for i in range(20 * 60):
    t = float(i)
    heavy = 300 <= t < 900 and i % 3 == 0
    otel.append({"timestamp": ts(t), "gen_ai.request.model": "chat-llm", "gen_ai.usage.input_tokens": 9000 if heavy else 400,
                 "gen_ai.usage.output_tokens": 200, "client_id": "k-heavy" if heavy else "k-%d" % (i % 4), "latency_ms": 900.0})
write("otel-token-cost", otel)

# 10. Filters with `in`, arithmetic in the condition, group by two columns.
multi = []
for i in range(30 * 60 * 2):
    t = i / 2
    model = ["recsys", "fraud", "vision"][i % 3]
    source = "src-%02d" % (i % 4)
    failing = model == "fraud" and source == "src-01" and 600 <= t < 1200 and (i // 12) % 3 == 0
    multi.append(event(t, model_id=model, model_version="1", source_id=source,
                       status="error" if failing else "ok", http_status=503 if failing else 200, latency_ms=40.0))
write("filter-in-arith-groups", multi)
