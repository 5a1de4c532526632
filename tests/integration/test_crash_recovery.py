"""SIGKILL the worker mid-stream and start it again: no span lost, no duplicate current row."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: errors
    scorer: error_spans
  - name: latency
    scorer: trace_latency
    params: {max_ms: 1000}
"""


def trace_messages(first: int, count: int) -> tuple[list[tuple[bytes, bytes]], dict[str, int]]:
    messages, expected = [], {}
    for i in range(first, first + count):
        trace_id = f"k{i:05d}"
        root = span(trace_id, f"{trace_id}-r", None, "root")
        kids = [span(trace_id, f"{trace_id}-{j}", root["span_id"], f"s{j}", start_ms=j) for j in range(3)]
        # Children first, root later: a kill between the two leaves the trace half-assembled.
        messages.append((trace_id.encode(), batch(trace_id, kids)))
        messages.append((trace_id.encode(), batch(trace_id, [root])))
        expected[trace_id] = 4
    return messages, expected


def test_sigkill_mid_stream_loses_no_span_and_duplicates_no_current_row(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    data = tmp_path / "data"
    first, expected = trace_messages(0, 150)
    second, more = trace_messages(150, 150)
    expected |= more

    worker = WorkerProcess(data, broker, rules).start()
    produce(broker, first)
    worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.traces_current") >= 20,
                    what="some traces stored before the kill")
    worker.kill()  # SIGKILL: no flush, no commit, no goodbye
    produce(broker, second)  # traffic keeps arriving while the worker is down

    worker = WorkerProcess(data, broker, rules).start()
    try:
        db = "evalstream"
        worker.wait_for(lambda: worker.scalar(f"SELECT count() FROM {db}.scores_current") >= 2 * len(expected),
                        timeout_s=120, what="every trace scored after the restart")
        time.sleep(1.5)  # let any redelivered duplicates land too, so the checks below see them
        assert dict(worker.query(f"SELECT trace_id, span_count FROM {db}.traces_current")) == expected
        assert dict(worker.query(f"SELECT trace_id, count() FROM {db}.spans FINAL GROUP BY trace_id")) == expected
        assert worker.query(f"SELECT trace_id FROM {db}.traces FINAL GROUP BY trace_id, version "
                            f"HAVING count() > 1") == []
        assert worker.query(f"SELECT rule, trace_id FROM {db}.scores FINAL "
                            f"GROUP BY rule, trace_id, trace_version HAVING count() > 1") == []
        assert worker.scalar(f"SELECT count() FROM {db}.scores_current") == 2 * len(expected)
        assert worker.scalar(f"SELECT count() FROM {db}.decisions_current WHERE outcome != 'scored'") == 0
    finally:
        worker.stop()
