"""Two worker processes by role on one broker: one assembles, routes, alerts and owns chDB (the sink);
the other only scores. Every job is scored by the scoring process; a job redelivered by a rebalance
(at-least-once) is stored under the same job id, so the deduplicated table holds each job once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

N = 200
RULES = """
rules:
  - {name: errors, scorer: error_spans}
  - {name: latency, scorer: trace_latency, params: {max_ms: 100}, sampling_rate: 0.5}
"""


def trace(i: int) -> tuple[bytes, bytes]:
    trace_id = f"r{i:04d}"
    root = span(trace_id, f"{trace_id}-r", None, "handle", dur_ms=50 + (i % 4) * 40)
    tool = span(trace_id, f"{trace_id}-t", root["span_id"], "search", span_type="tool",
                status="error" if i % 10 == 0 else "ok")
    return trace_id.encode(), batch(trace_id, [root, tool], final=True)


def test_a_scorer_only_process_scores_what_the_sink_process_routes(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    front = WorkerProcess(tmp_path / "front", broker, rules, {"EVALSTREAM_ROLES": "assembler,router,alerter"})
    scorer = WorkerProcess(tmp_path / "scorer", broker, rules,
                           {"EVALSTREAM_ROLES": "scorer", "EVALSTREAM_SINK_ENABLED": "false"})
    front.start()
    try:
        produce(broker, [trace(i) for i in range(N)])
        front.wait_for(lambda: front.scalar("SELECT count() FROM evalstream.decisions_current") == 2 * N,
                       timeout_s=90, what="every trace routed by the front process")
        queued = front.scalar("SELECT countIf(outcome = 'queued') FROM evalstream.decisions_current")
        assert queued > N and front.scalar("SELECT count() FROM evalstream.scores") == 0  # nobody scores yet

        scorer.start()
        front.wait_for(lambda: front.scalar("SELECT count() FROM evalstream.decisions_current "
                                            "WHERE outcome IN ('scored', 'failed')") >= N + 1,
                       timeout_s=120, what="jobs scored by the scorer process")
        front.wait_for(lambda: front.scalar("SELECT countIf(outcome = 'queued') FROM evalstream.decisions_current")
                       == 0, timeout_s=60, what="no job left queued")
        sampled = front.scalar("SELECT count() FROM evalstream.decisions_current "
                               "WHERE rule = 'latency' AND outcome = 'scored'")
        per_rule = dict(front.query("SELECT rule, count() FROM evalstream.scores FINAL GROUP BY rule"))
        assert per_rule == {"errors": N, "latency": sampled}
        assert front.scalar("SELECT uniqExact(job_id) FROM evalstream.scores") == N + sampled
        assert front.scalar("SELECT uniqExact(rule, trace_id) FROM evalstream.scores") == N + sampled
        assert front.scalar("SELECT countIf(passed = false) FROM evalstream.scores FINAL WHERE rule = 'errors'") == N // 10
        assert queued == N + sampled
        assert scorer.process is not None and scorer.process.poll() is None, scorer.log_tail()
        assert not (tmp_path / "scorer" / "clickhouse").exists()  # EVALSTREAM_SINK_ENABLED=false: no sink there
    finally:
        scorer.stop()
        front.stop()
