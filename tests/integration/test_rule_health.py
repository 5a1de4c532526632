"""`evalstream rules status` and `evalstream status` on a real worker: a rule that scores is healthy, one whose
scorer always raises is erroring with the cause named; status prints a summary for people, not raw JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: errors
    scorer: error_spans
  - name: refused-judge
    scorer: tests.integration.health_scorers:Refused
"""
N = 8


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    got = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert got.returncode == 0, got.stderr
    return got


def test_rules_status_and_status_show_healthy_and_erroring_rules(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    worker = WorkerProcess(tmp_path / "data", broker, rules,
                           {"EVALSTREAM_SCORER_MAX_ATTEMPTS": "1", "EVALSTREAM_METRICS_INTERVAL_S": "1"}).start()
    try:
        messages = []
        for i in range(N):
            trace_id = f"h{i:03d}"
            root = span(trace_id, f"{trace_id}-root", None, "handle")
            messages.append((trace_id.encode(), batch(trace_id, [root], final=True)))
        produce(broker, messages)
        worker.wait_for(lambda: worker.scalar("SELECT uniqExact(rule, trace_id) FROM evalstream.scores") >= 2 * N,
                        what="both rules' results stored")
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.consumer_lag") > 0,
                        what="a lag sample stored")

        env = {**os.environ, "EVALSTREAM_DATA_DIR": str(worker.data_dir), "COLUMNS": "60"}
        env.pop("EVALSTREAM_KAFKA_BOOTSTRAP", None)
        env.pop("EVALSTREAM_CLICKHOUSE_DSN", None)
        as_json = json.loads(cli(env, "rules", "status", "--rules", str(rules), "--format", "json").stdout)
        states = {r["rule"]: r for r in as_json["rules"]}
        assert states["errors"]["state"] == "healthy", states
        assert states["errors"]["scored"] == N and states["errors"]["matched"] == N
        assert states["refused-judge"]["state"] == "erroring", states
        assert states["refused-judge"]["errored"] == N
        assert states["refused-judge"]["reason"].startswith("provider refusing (PermissionError"), states

        table = cli(env, "rules", "status", "--rules", str(rules)).stdout  # piped, COLUMNS=60: nothing cut
        errors_row = next(line for line in table.splitlines() if "│ errors " in line)
        refused_row = next(line for line in table.splitlines() if "refused-judge" in line)
        assert "healthy" in errors_row and "erroring" in refused_row and "provider refusing" in refused_row
        assert "deferred" in table and "last score" in table

        status = cli(env, "status", "--rules", str(rules)).stdout
        assert not status.lstrip().startswith("{"), status  # a summary, not the raw gauges
        assert "Processes" in status and "assembler, router, scorer, alerter" in status, status
        assert "consumer group" in status and "evalstream-sink" in status, status
        assert "Rates (last 60 s)" in status and "Dead letters (last hour)" in status, status
        assert "refused-judge" in status and "erroring" in status and "healthy" in status, status

        machine = json.loads(cli(env, "status", "--rules", str(rules), "--format", "json").stdout)
        assert machine["storage"]["reachable"] is True and machine["health"]["counters"]
        assert {r["rule"]: r["state"] for r in machine["rules"]} == {"errors": "healthy",
                                                                     "refused-judge": "erroring"}
        assert machine["processes"][0]["roles"] == ["assembler", "router", "scorer", "alerter"]
        assert machine["processes"][0]["sink"] is True
    finally:
        worker.stop()
