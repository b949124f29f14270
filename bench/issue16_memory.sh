#!/usr/bin/env bash
# Issue 16, "memory that input cannot grow": the full-size runs that the test
# suite (crates/cli/tests/store_cli.rs, issue_16_memory) does at 512 MiB.
#
#   bench/issue16_memory.sh [path/to/inferwatch]
#
# 1. 3 GiB without a newline on stdin through `inferwatch detect -`;
# 2. a generic stream whose 1 M events each carry a new field name, through
#    `inferwatch ingest --stream gateway -`.
# Prints the peak resident set (VmHWM, sampled from /proc while the process
# runs) and the wall time of each. Limits (as in the test): detect 128 MiB,
# ingest 400 MiB (about 210 MiB live, the rest freed pages kept for speed).
set -euo pipefail
binary=${1:-target/release/inferwatch}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs "$@" with stdin from the generator given as $1, printing its peak RSS.
peak_of() {
    local generator=$1
    shift
    local started=$SECONDS peak=0 hwm
    "$generator" | "$@" &
    local pid=$!
    # The pipeline's last process is the one to watch.
    while kill -0 "$pid" 2>/dev/null; do
        hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        if [[ -n "$hwm" && "$hwm" -gt "$peak" ]]; then peak=$hwm; fi
        sleep 0.2
    done
    wait "$pid"
    echo "peak RSS $((peak / 1024)) MiB in $((SECONDS - started)) s"
}

no_newline() { head -c 3G /dev/zero | tr '\0' a; }
field_names() {
    awk 'BEGIN { for (i = 0; i < 1000000; i++)
        printf "{\"ts\":\"2026-01-01T00:%02d:%02dZ\",\"field_%d\":%d}\n", int(i / 60) % 60, i % 60, i, i }'
}

echo "detect, 3 GiB without a newline:"
peak_of no_newline "$binary" detect --quiet --rules "$root/rules" --dead-letter "$work/dead.jsonl" -
echo "ingest --stream gateway, 1 M distinct field names:"
peak_of field_names "$binary" ingest --quiet --stream gateway --data "$work/data" -
