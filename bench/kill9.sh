#!/usr/bin/env bash
# Issue 16, crash loops: the full-size run of crates/cli/tests/store_kill9.rs.
#
#   bench/kill9.sh [cycles] [events]      (default: 20 cycles, 5,000,000 events)
#
# Per fsync mode (always, interval_ms=100):
# - `inferwatch ingest --acks` SIGKILLed `cycles` times at points chosen by
#   watching its acknowledgements: nothing acknowledged lost, nothing twice;
# - `inferwatch run` SIGKILLed `cycles` times while it ingests and detects:
#   its alert files end with exactly the transitions of an uninterrupted
#   run, each once, and the store with every event once.
# CI runs the same tests with 5 cycles over 1 M events.
set -euo pipefail
cd "$(dirname "$0")/.."
export INFERWATCH_KILL_CYCLES=${1:-20}
export INFERWATCH_KILL_EVENTS=${2:-5000000}
started=$SECONDS
cargo test --locked -p inferwatch-cli --test store_kill9 -- --test-threads 1 --nocapture
echo "kill9: $INFERWATCH_KILL_CYCLES cycles x $INFERWATCH_KILL_EVENTS events per test, $((SECONDS - started)) s"
