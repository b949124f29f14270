#!/usr/bin/env python3
"""Overload with kill -9: a throttled `inferwatch serve` offered ~10x what it
can store, killed with SIGKILL in the middle and restarted; afterwards every
event that was acknowledged with a 2xx must be in the store.

    bench/overload.py --binary PATH [--seconds 30] [--factor 10] [--senders 32]
                      [--delay-ms 50] [--queue 2] [--events 20] [--json]

The node runs with `--queue Q` (requests waiting for the store) and the
hidden `--test-append-delay-ms D` knob (each store append sleeps D ms), so
its capacity is about 1000/D requests/s. That capacity is first measured
(acknowledged requests/s with every sender sending back to back); then `--senders`
threads offer `--factor` times that many requests/s for `--seconds`: three
of four send NDJSON to /api/v1/ingest/inference, one of four Splunk HEC to
/services/collector/event. Each event carries a unique `request_id`.

Checked (exit status 1 when any fails):
- overload is answered 429 (NDJSON) and 503 with HEC code 9 (HEC), each
  with a `Retry-After` header;
- every `request_id` acknowledged with a 2xx, before and after the
  SIGKILL, is found in the store by SQL (`inferwatch query`) at the end.

Reported, not asserted: the offered and acknowledged rates, the node's peak
RSS (VmHWM from /proc/PID/status) in each of its two lives, and how many
events were stored without their sender having seen the 2xx (answers lost
to the SIGKILL).

Every address is loopback; the run is bounded by --seconds.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time


class Node:
    """One life of `inferwatch serve` on a loopback port."""

    def __init__(self, binary, data, queue, delay_ms):
        self.process = subprocess.Popen(
            [
                binary, "serve", "--no-pg", "--open", "--listen", "127.0.0.1:0",
                "--data", data, "--queue", str(queue),
                "--test-append-delay-ms", str(delay_ms), "--idle-after", "off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.address = None
        for line in self.process.stderr:
            if "HTTP ingest on " in line:
                self.address = line.split("HTTP ingest on ", 1)[1].split()[0]
                break
        if self.address is None:
            raise SystemExit("overload: serve did not start")
        # Keep draining stderr so the node never blocks on it.
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()
        self.peak_kib = 0

    def sample(self):
        """VmHWM (peak resident set) in KiB, or the last value once gone."""
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
        except OSError:
            pass
        return self.peak_kib

    def kill_9(self):
        self.sample()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        self.sample()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        if code != 0:
            raise SystemExit(f"overload: serve exited with {code} on SIGTERM")


class Shared:
    def __init__(self):
        self.lock = threading.Lock()
        self.address = None
        self.acked = set()
        self.counts = {
            "requests": 0, "ok": 0, "busy_429": 0, "busy_hec_503_9": 0,
            "busy_without_retry_after": 0, "connection_errors": 0, "other": 0,
        }
        self.other_samples = []

    def count(self, key, sample=None):
        with self.lock:
            self.counts[key] += 1
            if sample is not None and len(self.other_samples) < 5:
                self.other_samples.append(sample)


def body_for(kind, sender, sequence, events):
    ids = [f"s{sender}-{sequence}-{i}" for i in range(events)]
    now = time.time()
    if kind == "hec":
        body = "".join(
            json.dumps({"time": now, "event": {
                "model_id": "overload", "request_id": rid, "latency_ms": 5}})
            for rid in ids
        )
        return "/services/collector/event", body, ids
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    body = "".join(
        json.dumps({"timestamp": stamp, "model_id": "overload", "request_id": rid,
                    "latency_ms": 5}) + "\n"
        for rid in ids
    )
    return "/api/v1/ingest/inference", body, ids


def send(shared, connection_box, path, body):
    """One POST on a kept-alive connection to the current node; returns
    (status, headers, body) or None on a connection error."""
    address = shared.address
    if address is None:
        return None
    connection = connection_box.get(address)
    if connection is None:
        host, port = address.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection_box.clear()
        connection_box[address] = connection
    try:
        connection.request("POST", path, body=body.encode(),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    except (OSError, http.client.HTTPException):
        connection.close()
        connection_box.clear()
        return None


def sender(shared, index, kind, rate, deadline, events):
    """Sends at `rate` requests/s until `deadline` (no catching up)."""
    connections = {}
    sequence = 0
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        if now < next_at:
            time.sleep(min(next_at - now, deadline - now))
            continue
        next_at = max(next_at + 1.0 / rate, now)
        sequence += 1
        path, body, ids = body_for(kind, index, sequence, events)
        shared.count("requests")
        answer = send(shared, connections, path, body)
        if answer is None:
            shared.count("connection_errors")
            time.sleep(0.05)
            continue
        status, headers, payload = answer
        if 200 <= status < 300:
            if kind == "ndjson":
                accepted = json.loads(payload).get("accepted")
                if accepted != len(ids):
                    shared.count("other", f"{status} {payload[:200]!r}")
                    continue
            with shared.lock:
                shared.acked.update(ids)
            shared.count("ok")
        elif status == 429 and kind == "ndjson":
            shared.count("busy_429")
            if not headers.get("Retry-After"):
                shared.count("busy_without_retry_after")
        elif status == 503 and kind == "hec" and json.loads(payload).get("code") == 9:
            shared.count("busy_hec_503_9")
            if not headers.get("Retry-After"):
                shared.count("busy_without_retry_after")
        else:
            shared.count("other", f"{status} {payload[:200]!r}")


def capacity(shared, seconds, senders, events):
    """Requests/s the node acknowledges when saturated: `senders` threads
    send back to back (a refused request is simply sent again) for
    `seconds`. A single sequential sender would measure the fsync wait of
    one request instead: a 2xx waits for its WAL record's fsync."""
    probe = Shared()
    probe.address = shared.address
    started = time.monotonic()
    deadline = started + seconds
    threads = [
        threading.Thread(target=sender, args=(probe, 900 + index, "ndjson", 1e9, deadline, events))
        for index in range(senders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with shared.lock:
        shared.acked.update(probe.acked)
    return probe.counts["ok"] / (time.monotonic() - started)


def stored_ids(binary, data):
    out = subprocess.run(
        [binary, "query", "--data", data, "--format", "csv",
         "SELECT request_id FROM inference WHERE model_id = 'overload'"],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.splitlines()[1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=os.environ.get("INFERWATCH_BIN", "inferwatch"))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--delay-ms", type=int, default=50)
    parser.add_argument("--queue", type=int, default=2)
    parser.add_argument("--events", type=int, default=20, help="events per request")
    parser.add_argument("--probe-seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="inferwatch-overload-")
    data = os.path.join(directory, "data")
    shared = Shared()
    node = Node(args.binary, data, args.queue, args.delay_ms)
    shared.address = node.address
    measured = capacity(shared, args.probe_seconds, args.senders, args.events)
    rate = measured * args.factor / args.senders
    started = time.monotonic()
    deadline = started + args.seconds
    threads = [
        threading.Thread(
            target=sender,
            args=(shared, index, "hec" if index % 4 == 3 else "ndjson", rate, deadline, args.events),
        )
        for index in range(args.senders)
    ]
    for thread in threads:
        thread.start()
    # Sample the node's peak RSS while it is loaded; SIGKILL it halfway.
    lives = [node]
    killed = False
    while time.monotonic() < deadline:
        node.sample()
        if not killed and time.monotonic() >= started + args.seconds / 2:
            shared.address = None
            node.kill_9()
            killed = True
            node = Node(args.binary, data, args.queue, args.delay_ms)
            lives.append(node)
            shared.address = node.address
        time.sleep(0.25)
    for thread in threads:
        thread.join()
    node.stop()
    elapsed = time.monotonic() - started

    stored = stored_ids(args.binary, data)
    stored_set = set(stored)
    missing = shared.acked - stored_set
    counts = dict(shared.counts)
    report = {
        "capacity_requests_per_s": round(measured, 1),
        "capacity_events_per_s": round(measured * args.events, 1),
        "offered_requests_per_s": round(counts["requests"] / elapsed, 1),
        "offered_factor": round(counts["requests"] / elapsed / measured, 1),
        "seconds": round(elapsed, 1),
        "senders": args.senders,
        "queue": args.queue,
        "append_delay_ms": args.delay_ms,
        "events_per_request": args.events,
        **counts,
        "other_samples": shared.other_samples,
        "peak_rss_kib_per_life": [life.peak_kib for life in lives],
        "acknowledged_events": len(shared.acked),
        "stored_events": len(stored),
        "stored_twice": len(stored) - len(stored_set),
        "stored_without_ack": len(stored_set - shared.acked),
        "acknowledged_missing": len(missing),
        "missing_samples": sorted(missing)[:5],
    }
    failures = []
    if missing:
        failures.append(f"{len(missing)} acknowledged events are missing")
    if counts["busy_429"] == 0:
        failures.append("no 429 under overload")
    if counts["busy_hec_503_9"] == 0:
        failures.append("no HEC 503 code 9 under overload")
    if counts["busy_without_retry_after"]:
        failures.append("a busy answer had no Retry-After")
    if counts["other"]:
        failures.append(f"unexpected answers: {shared.other_samples}")
    report["failures"] = failures
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    if args.keep:
        print(f"data kept in {data}", file=sys.stderr)
    else:
        shutil.rmtree(directory, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
