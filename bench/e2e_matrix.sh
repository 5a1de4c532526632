#!/usr/bin/env bash
# The end-to-end runs recorded in docs/benchmarks.md ("second pass" and "CPU per trace"), one after another on a
# quiet machine, at the 8 partitions per topic they were recorded with (the bench's default is now the embedded
# stack's, pipeline/embedded.py EMBEDDED_TOPIC_PARTITIONS):
#   bash bench/e2e_matrix.sh > matrix.log        (PY=/path/to/python to use another interpreter)
# Each run ends with its CPU table and one JSON line; `grep '^{' matrix.log` collects the JSON.
set -u
cd "$(dirname "$0")/.."
run() { echo "=== $*"; timeout 900 "$@" 2>&1 | tail -n 20; }
PY=${PY:-.venv/bin/python}
run $PY bench/e2e_throughput.py --traces 6000 --spans 10 --partitions 8
run $PY bench/e2e_throughput.py --traces 6000 --spans 10 --partitions 8 --split-sink
run $PY bench/e2e_throughput.py --traces 6000 --spans 10 --partitions 8 --split-roles
run $PY bench/e2e_throughput.py --traces 12000 --spans 10 --partitions 8 --split-sink
run env EVALSTREAM_FETCH_MAX_WAIT_MS=100 $PY bench/e2e_throughput.py --traces 12000 --spans 10 --partitions 8 --split-sink
run $PY bench/e2e_throughput.py --traces 6000 --spans 10 --partitions 8 --split-sink --traces-per-message 1
run $PY bench/e2e_throughput.py --traces 6000 --spans 10 --partitions 8 --split-sink --latency-traces 0 --profile /tmp/e2e-profile.txt
