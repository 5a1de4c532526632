"""An alert window survives a worker restart: two failures before it, one after, and the
three-failure alert fires with all three traces. (The window is ~31 years, so no clock boundary falls inside.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: errors
    scorer: error_spans
alerts:
  - {name: burst, rule: errors, condition: failed, min_count: 3, window_s: 1000000000}
"""


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
        time.sleep(2)  # the two alert events reach the alerter's window (a few ms; generous)
        assert worker.scalar("SELECT count() FROM evalstream.alerts FINAL") == 0  # 2 < 3: nothing yet
    finally:
        worker.stop()

    worker = WorkerProcess(data, broker, rules).start()
    try:
        produce(broker, [failing_trace("w3")])
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.alerts FINAL") == 1,
                        what="the third failure, after the restart, completes the window")
        failures, trace_ids = worker.query("SELECT failures, trace_ids FROM evalstream.alerts FINAL")[0]
        trace_ids = json.loads(trace_ids) if isinstance(trace_ids, str) else trace_ids
        assert failures == 3 and sorted(trace_ids) == ["w1", "w2", "w3"]
    finally:
        worker.stop()
