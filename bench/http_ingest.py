#!/usr/bin/env python3
"""HTTP ingest against file ingest of the same events, on loopback.

    bench/http_ingest.py --binary PATH --out DIR [--events 1000000] [--seconds 10]
                  [--connections 64] [--python VENV_PYTHON]

Simulates --events events (`inferwatch simulate`, one hour, seed 42) and
builds request bodies from the first ones, once: NDJSON (1,000 and 5,000
events), Elasticsearch `_bulk` (1,000), Splunk HEC `/services/collector/event`
(1,000 concatenated `{"event": ...}` objects) and OTLP/HTTP protobuf
(1,000 log records, built with `opentelemetry-proto` from --python; the
GenAI names for model, tokens and request id, the rest as attributes).

For each body a fresh data directory gets an ingest token and a fresh
`inferwatch serve --no-pg --listen 127.0.0.1:0 --fsync interval_ms=100
--idle-after off`, and `wrk` (one thread, --connections connections, the
body read once by a Lua script) posts it back to back for --seconds.
Reported per protocol: events/s acknowledged (2xx requests x events per
body), wrk's p50/p99 latency (request sent to 2xx received: the ack, which
waits for the WAL's fsync), the server's CPU seconds per million
acknowledged events (/proc/PID/stat utime+stime from just before the load
to its clean exit after SIGTERM, so the final flush counts, as it does for
file ingest) and wrk's own CPU (it shares the 2 cores). Afterwards the
rows stored are counted with `inferwatch query`: at least every
acknowledged event must be there (requests cut off when wrk stops may add
a few).

The baseline is `inferwatch ingest --fsync interval_ms=100` of the whole
simulated JSONL into a fresh directory: wall seconds and CPU seconds per
million events.

Prints a table and writes DIR/http.json. Exit status 1 when a stored count
falls short of what was acknowledged.
"""

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

FSYNC = "interval_ms=100"
TICKS = os.sysconf("SC_CLK_TCK")

WRK_SCRIPT = r"""
local file = assert(io.open(os.getenv("IW_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("IW_TYPE")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("IW_TOKEN")

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

OTLP_BUILDER = r"""
import datetime as dt, json, sys
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

GENAI = {"model_id": "gen_ai.request.model", "input_tokens": "gen_ai.usage.input_tokens",
         "output_tokens": "gen_ai.usage.output_tokens", "request_id": "gen_ai.response.id"}

def any_value(value):
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in value]))
    return AnyValue(string_value=str(value))

records = []
for line in open(sys.argv[1]):
    event = json.loads(line)
    stamp = dt.datetime.fromisoformat(event.pop("timestamp").replace("Z", "+00:00"))
    nanos = int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000
    records.append(LogRecord(time_unix_nano=nanos, attributes=[
        KeyValue(key=GENAI.get(key, key), value=any_value(value)) for key, value in event.items()]))
request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
    resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="gateway"))]),
    scope_logs=[ScopeLogs(log_records=records)])])
open(sys.argv[2], "wb").write(request.SerializeToString())
"""


def cpu_seconds(pid):
    """utime + stime of a live process, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_rusage(command, **kwargs):
    """Runs a command to its end; (stdout, wall seconds, CPU seconds)."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, **kwargs)
    out_holder = []
    reader = threading.Thread(target=lambda: out_holder.append(process.stdout.read()))
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    reader.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"http bench: {command[0]} {command[1]} exited with {process.returncode}")
    return out_holder[0], wall, usage.ru_utime + usage.ru_stime


def stored_rows(binary, data):
    out = subprocess.run(
        [binary, "query", "--data", data, "--format", "csv", "SELECT count(*) AS n FROM inference"],
        check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def build_bodies(binary, events, work, python):
    data = os.path.join(work, "events.jsonl")
    subprocess.run([binary, "simulate", "--duration", "1h", "--rate", str(events / 3600),
                    "--seed", "42", "--output", data], check=True)
    with open(data, "rb") as source:
        lines = [next(source) for _ in range(5000)]
    bodies = {}

    def write(name, payload):
        path = os.path.join(work, name)
        with open(path, "wb") as body:
            body.write(payload)
        return path

    bodies["ndjson-1000"] = write("ndjson-1000", b"".join(lines[:1000]))
    bodies["ndjson-5000"] = write("ndjson-5000", b"".join(lines))
    bodies["bulk-1000"] = write("bulk-1000", b"".join(b'{"index":{}}\n' + line for line in lines[:1000]))
    bodies["hec-1000"] = write("hec-1000", b"".join(
        json.dumps({"host": "gw-1", "event": json.loads(line)}, separators=(",", ":")).encode()
        for line in lines[:1000]))
    subset = write("otlp-1000.jsonl", b"".join(lines[:1000]))
    bodies["otlp-1000"] = os.path.join(work, "otlp-1000")
    subprocess.run([python, "-c", OTLP_BUILDER, subset, bodies["otlp-1000"]], check=True)
    return data, bodies


CASES = [
    # name, body, path, content type, events per body
    ("ndjson x1000", "ndjson-1000", "/api/v1/ingest/inference", "application/x-ndjson", 1000),
    ("ndjson x5000", "ndjson-5000", "/api/v1/ingest/inference", "application/x-ndjson", 5000),
    ("_bulk x1000", "bulk-1000", "/inference/_bulk", "application/x-ndjson", 1000),
    ("hec x1000", "hec-1000", "/services/collector/event", "application/json", 1000),
    ("otlp-proto x1000", "otlp-1000", "/v1/logs", "application/x-protobuf", 1000),
]


def serve_case(args, work, script, name, body, path, content_type, per_body):
    data = os.path.join(work, "serve-" + name.split()[0] + "-" + str(per_body))
    shutil.rmtree(data, ignore_errors=True)
    token = subprocess.run([args.binary, "token", "create", "--data", data, "--scope", "ingest"],
                           check=True, capture_output=True, text=True).stdout.strip()
    server = subprocess.Popen(
        [args.binary, "serve", "--no-pg", "--listen", "127.0.0.1:0", "--data", data,
         "--fsync", FSYNC, "--idle-after", "off", "--queue", str(args.queue)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    address = None
    for line in server.stderr:
        if "HTTP ingest on " in line:
            address = line.split("HTTP ingest on ", 1)[1].split()[0]
            break
    if address is None:
        raise SystemExit("http bench: serve did not start")
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
    if args.profile == name:
        perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-o",
                                 os.path.join(args.out, "http-perf.data"), "-p", str(server.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = cpu_seconds(server.pid)
    environment = dict(os.environ, IW_BODY=body, IW_TYPE=content_type, IW_TOKEN=token)
    out, wall, wrk_cpu = run_rusage(
        ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--timeout", "10s",
         "-s", script, f"http://{address}{path}"], env=environment)
    during = cpu_seconds(server.pid) - before
    if args.profile == name:
        perf.send_signal(signal.SIGINT)
        perf.wait()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    server.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(server.pid, 0)
    server.returncode = os.waitstatus_to_exitcode(status)
    if server.returncode != 0:
        raise SystemExit(f"http bench: serve exited with {server.returncode}")
    total = usage.ru_utime + usage.ru_stime - before
    seconds = summary["duration_us"] / 1e6
    acked_requests = summary["requests"] - summary["non2xx"]
    acked = acked_requests * per_body
    stored = stored_rows(args.binary, data)
    shutil.rmtree(data, ignore_errors=True)
    return {
        "case": name, "path": path, "events_per_request": per_body, "seconds": seconds,
        "requests": summary["requests"], "non_2xx": summary["non2xx"],
        "socket_errors": summary["connect"] + summary["read"] + summary["write"] + summary["timeout"],
        "events_acked": acked, "events_stored": stored,
        "events_per_second": acked / seconds,
        "p50_ms": summary["p50_us"] / 1000, "p99_ms": summary["p99_us"] / 1000,
        "server_cpu_s_during_load": during, "server_cpu_s_to_exit": total,
        "server_cpu_s_per_m_events": total / acked * 1e6 if acked else None,
        "wrk_cpu_s": wrk_cpu, "wrk_cpu_s_per_m_events": wrk_cpu / acked * 1e6 if acked else None,
        "wall_s": wall,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--queue", type=int, default=64)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--profile", default="", help="perf record the server during this case")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="iw-http-bench-")
    try:
        script = os.path.join(work, "post.lua")
        with open(script, "w") as lua:
            lua.write(WRK_SCRIPT)
        jsonl, bodies = build_bodies(args.binary, args.events, work, args.python)
        with open(jsonl, "rb") as source:
            events = sum(1 for _ in source)
        file_data = os.path.join(work, "file-ingest")
        _, file_wall, file_cpu = run_rusage(
            [args.binary, "ingest", "--data", file_data, "--fsync", FSYNC, "--quiet", jsonl])
        file_stored = stored_rows(args.binary, file_data)
        shutil.rmtree(file_data, ignore_errors=True)
        baseline = {
            "events": events, "events_stored": file_stored, "wall_s": file_wall,
            "events_per_second": events / file_wall, "cpu_s": file_cpu,
            "cpu_s_per_m_events": file_cpu / events * 1e6,
        }
        wanted = {name.strip() for name in args.cases.split(",") if name.strip()}
        results = []
        for name, body, path, content_type, per_body in CASES:
            if wanted and name not in wanted:
                continue
            result = serve_case(args, work, script, name, bodies[body], path, content_type, per_body)
            result["server_cpu_vs_file"] = (
                result["server_cpu_s_per_m_events"] / baseline["cpu_s_per_m_events"]
                if result["server_cpu_s_per_m_events"] else None)
            results.append(result)
            print(f"  {name}: {result['events_per_second']:,.0f} events/s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"file ingest ({FSYNC}): {events:,} events in {file_wall:.2f} s = "
          f"{baseline['events_per_second']:,.0f} events/s, {baseline['cpu_s_per_m_events']:.2f} CPU s per M events")
    header = f"{'case':<17}{'events/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU s/M':>13}{'x file':>8}{'wrk CPU s/M':>13}{'non-2xx':>9}{'stored>=acked':>15}"
    print(header)
    short = False
    for r in results:
        ok = r["events_stored"] >= r["events_acked"]
        short |= not ok
        print(f"{r['case']:<17}{r['events_per_second']:>11,.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{r['server_cpu_s_per_m_events'] or 0:>13.2f}{r['server_cpu_vs_file'] or 0:>8.2f}"
              f"{r['wrk_cpu_s_per_m_events'] or 0:>13.2f}{r['non_2xx']:>9}{str(ok):>15}")
    report = {
        "date": dt.date.today().isoformat(), "cores": os.cpu_count(), "fsync": FSYNC,
        "connections": args.connections, "seconds": args.seconds, "queue": args.queue,
        "file_ingest": baseline, "http": results,
        "targets": {"ndjson_events_per_second": 800_000, "server_cpu_vs_file": 1.25},
    }
    with open(os.path.join(args.out, "http.json"), "w") as out:
        json.dump(report, out, indent=2)
    if short:
        print("http bench: a protocol stored fewer events than it acknowledged", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
