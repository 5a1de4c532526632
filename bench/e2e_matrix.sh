#!/usr/bin/env bash
# The end-to-end runs recorded in docs/benchmarks.md ("second pass"), one after another on a quiet machine:
#   bash bench/e2e_matrix.sh > matrix.log
set -u
cd "$(dirname "$0")/.."
run() { echo "=== $*"; timeout 900 "$@" 2>&1 | tail -7; }
PY=.venv/bin/python
run $PY bench/e2e_throughput.py --traces 6000 --spans 10
run $PY bench/e2e_throughput.py --traces 6000 --spans 10 --split-sink
run $PY bench/e2e_throughput.py --traces 12000 --spans 10 --split-sink
run env EVALSTREAM_FETCH_MAX_WAIT_MS=100 $PY bench/e2e_throughput.py --traces 12000 --spans 10 --split-sink
run $PY bench/e2e_throughput.py --traces 6000 --spans 10 --split-sink --traces-per-message 1
run $PY bench/e2e_throughput.py --traces 6000 --spans 10 --split-sink --latency-traces 0 --profile /tmp/e2e-profile.txt
