"""An alert window survives a worker restart: two failures before it, one after, and the
three-failure alert fires with all three traces. (The window is ~31 years, so no clock boundary falls inside.)
Before the restart the test checks that the count is in the table's changelog and that the failures'
observations were committed, so the count after the restart comes from the restored table, not a replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import topics
from tests.integration.harness import (
    FAST_ENV,
    WorkerProcess,
    batch,
    committed_offsets,
    produce,
    read_topic,
    span,
)

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: errors
    scorer: error_spans
alerts:
  - {name: burst, rule: errors, condition: failed, min_count: 3, window_s: 1000000000}
"""
CHANGELOG = "evalstream-alert-incidents-changelog"  # Faust: <app id>-<table>-changelog


def failing_trace(trace_id: str) -> tuple[bytes, bytes]:
    root = span(trace_id, f"{trace_id}-r", None, "handle")
    tool = span(trace_id, f"{trace_id}-t", root["span_id"], "search", span_type="tool", status="error")
    return trace_id.encode(), batch(trace_id, [root, tool], final=True)


def test_the_window_count_continues_after_a_restart(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    data = tmp_path / "data"

    worker = WorkerProcess(data, broker, rules).start()
    try:
        produce(broker, [failing_trace("w1"), failing_trace("w2")])
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.scores_current "
                                              "WHERE passed = false") == 2, what="two failures scored")

        def counted_in_changelog() -> bool:  # the alerter's table holds both failures of the window
            values = [v for _, _, v in read_topic(broker, CHANGELOG, idle_s=0.5)]
            return bool(values) and b'"w1"' in values[-1] and b'"w2"' in values[-1]

        worker.wait_for(counted_in_changelog, timeout_s=30, what="the window's count in the table's changelog")
        assert worker.scalar("SELECT count() FROM evalstream.alerts FINAL") == 0  # 2 < 3: nothing yet
    finally:
        worker.stop()

    # The observations of w1 and w2 were committed: the next worker does not read them again.
    seen = [(p, o) for p, o, v in read_topic(broker, topics.ALERT_OBSERVATIONS) if b'"w1"' in v or b'"w2"' in v]
    assert seen
    committed = committed_offsets(broker, "evalstream", topics.ALERT_OBSERVATIONS,
                                  int(FAST_ENV["EVALSTREAM_TOPIC_PARTITIONS"]))
    assert all(committed[p] > o for p, o in seen), (seen, committed)

    worker = WorkerProcess(data, broker, rules).start()
    try:
        produce(broker, [failing_trace("w3")])
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.alerts FINAL") == 1,
                        what="the third failure, after the restart, completes the window")
        failures, trace_ids = worker.query("SELECT failures, trace_ids FROM evalstream.alerts FINAL")[0]
        trace_ids = json.loads(trace_ids) if isinstance(trace_ids, str) else trace_ids
        assert failures == 3 and sorted(trace_ids) == ["w1", "w2", "w3"]

        # `evalstream alerts history` reads it back while the worker runs (through the sink's endpoint).
        env = {**os.environ, "EVALSTREAM_DATA_DIR": str(data), "COLUMNS": "250"}
        history = subprocess.run([sys.executable, "-m", "pipeline.cli", "alerts", "history", "--alert", "burst"],
                                 env=env, capture_output=True, text=True, timeout=60, check=False)
        assert history.returncode == 0, history.stderr
        (row,) = [line for line in history.stdout.splitlines() if "firing" in line]
        assert "[burst]" in row and "critical" in row and "console" in row  # no channel set: printed, and so recorded
        other = subprocess.run([sys.executable, "-m", "pipeline.cli", "alerts", "history", "--alert", "it's-none"],
                               env=env, capture_output=True, text=True, timeout=60, check=False)
        assert other.returncode == 0 and "firing" not in other.stdout  # quoted, filtered, nothing found
    finally:
        worker.stop()
