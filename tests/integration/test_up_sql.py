"""`evalstream sql` while `evalstream up` runs on the embedded default (its own Tansu broker and chDB):
the query goes through the process that owns the chDB path, in every output format, and a write is refused.
The embedded stack runs on its own partition count (EMBEDDED_TOPIC_PARTITIONS), which it records for the
processes that attach to it."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import topics
from pipeline.embedded import EMBEDDED_TOPIC_PARTITIONS
from pipeline.runfile import read_run_file
from tests.integration.harness import FAST_ENV, batch, produce, span

pytestmark = pytest.mark.integration

RULES = "rules:\n  - {name: errors, scorer: error_spans}\n"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def failing_trace(trace_id: str) -> tuple[bytes, bytes]:
    root = span(trace_id, f"{trace_id}-r", None, "handle")
    tool = span(trace_id, f"{trace_id}-t", root["span_id"], "search", span_type="tool", status="error")
    return trace_id.encode(), batch(trace_id, [root, tool], final=True)


def test_sql_answers_through_the_running_up_and_refuses_writes(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("EVALSTREAM_KAFKA_BOOTSTRAP", "EVALSTREAM_CLICKHOUSE_DSN")}
    env.update(FAST_ENV, EVALSTREAM_DATA_DIR=str(data))
    del env["EVALSTREAM_TOPIC_PARTITIONS"]  # the embedded default, as a user's `up` gets it
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "up", "--rules", str(rules)], env=env,
                          stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        run: dict = {}
        while not (run.get("query_url") and run.get("kafka_bootstrap")):
            assert up.poll() is None and time.monotonic() < deadline, (tmp_path / "up.log").read_text()[-3000:]
            time.sleep(0.2)
            run = read_run_file(data / "run.json")
        produce(run["kafka_bootstrap"], [failing_trace(f"u{i}") for i in range(3)])

        query = "SELECT trace_id, passed FROM evalstream.scores_current WHERE rule = 'errors' ORDER BY trace_id"
        deadline = time.monotonic() + 60
        while True:
            got = cli(env, "sql", query, "--format", "json")
            assert got.returncode == 0, got.stderr
            rows = [json.loads(line) for line in got.stdout.splitlines()]  # JSON Lines: one object per row
            if len(rows) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert rows == [{"trace_id": f"u{i}", "passed": False} for i in range(3)]

        as_csv = cli(env, "sql", query, "--format", "csv")
        assert list(csv.reader(io.StringIO(as_csv.stdout)))[:2] == [["trace_id", "passed"], ["u0", "False"]]
        table = cli(env, "sql", query)  # the default: a table
        assert table.returncode == 0 and "u2" in table.stdout and "trace_id" in table.stdout

        write = cli(env, "sql", "INSERT INTO evalstream.dead_letters (stage) VALUES ('x')")
        assert write.returncode != 0 and "readonly" in (write.stderr + write.stdout).lower()

        # the scores above went through topics and tables of the embedded count, which `up` recorded for others
        assert run["topic_partitions"] == EMBEDDED_TOPIC_PARTITIONS
        listed = cli({**env, "COLUMNS": "200"}, "topics", "list")
        assert listed.returncode == 0, listed.stderr
        counts = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in listed.stdout.splitlines()
                  if line.count("│") == 3 and "evalstream." in line}
        assert counts == {name: str(EMBEDDED_TOPIC_PARTITIONS) for name in topics.ALL}, listed.stdout
        # a worker attaching through run.json with another count would misroute: refused before it starts
        other = cli({**env, "EVALSTREAM_TOPIC_PARTITIONS": str(EMBEDDED_TOPIC_PARTITIONS + 2)}, "worker", "--no-sink")
        assert other.returncode == 2 and "created its topics with" in other.stderr, other.stderr
        assert up.poll() is None  # the pipeline kept running through it all
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        log.close()
