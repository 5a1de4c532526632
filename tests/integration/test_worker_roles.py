"""Worker processes by role on one broker: one assembles, routes, alerts and owns chDB (the sink); the
others only score. Every job is scored by a scoring process; two scoring processes split the jobs topic's
partitions between them. A job redelivered by a rebalance (at-least-once) is stored under the same job
id, so the deduplicated table holds each job once."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import topics
from pipeline.sampling import is_sampled
from tests.integration.harness import FAST_ENV, WorkerProcess, batch, produce, span
from tests.integration.test_metrics import metrics_url, scrape

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


def assigned_job_partitions(worker: WorkerProcess) -> set[str]:
    """The partitions of the jobs topic this process consumes, from its lag gauges (one per assigned partition)."""
    samples = scrape(metrics_url(worker)).get("evalstream_consumer_lag_records", {})
    return {dict(labels)["partition"] for labels in samples if dict(labels)["topic"] == topics.JOBS}


def test_two_scorer_processes_share_the_jobs_partitions_and_score_each_trace_once(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    front = WorkerProcess(tmp_path / "front", broker, rules, {"EVALSTREAM_ROLES": "assembler,router,alerter"})
    scorers = [WorkerProcess(tmp_path / f"scorer-{i}", broker, rules, {
        "EVALSTREAM_ROLES": "scorer", "EVALSTREAM_SINK_ENABLED": "false", "EVALSTREAM_METRICS_INTERVAL_S": "0.5"})
        for i in range(2)]
    front.start()
    try:
        for worker in scorers:
            worker.start()
        partitions = {str(p) for p in range(int(FAST_ENV["EVALSTREAM_TOPIC_PARTITIONS"]))}

        def split() -> bool:  # the group has settled: each process owns some partitions, together all of them
            owned = [assigned_job_partitions(w) for w in scorers]
            return all(owned) and not owned[0] & owned[1] and owned[0] | owned[1] == partitions

        front.wait_for(split, timeout_s=90, what="both scorer processes owning jobs partitions")
        produce(broker, [trace(i) for i in range(N)])
        front.wait_for(lambda: front.scalar("SELECT count() FROM evalstream.decisions_current") == 2 * N
                       and front.scalar("SELECT countIf(outcome = 'queued') FROM evalstream.decisions_current") == 0,
                       timeout_s=120, what="every job scored")
        sampled = front.scalar("SELECT count() FROM evalstream.decisions_current "
                               "WHERE rule = 'latency' AND outcome = 'scored'")
        assert dict(front.query("SELECT rule, count() FROM evalstream.scores FINAL GROUP BY rule")) \
            == {"errors": N, "latency": sampled}
        assert front.scalar("SELECT uniqExact(rule, trace_id) FROM evalstream.scores") == N + sampled
        # Sampling does not depend on how many processes route or score: the same set as the pure function's.
        latency = {t for (t,) in front.query("SELECT trace_id FROM evalstream.scores FINAL WHERE rule = 'latency'")}
        assert latency == {f"r{i:04d}" for i in range(N) if is_sampled(f"r{i:04d}", "latency", 0.5)}

        # Both processes did part of the work, and between them all of it.
        done = [sum(scrape(metrics_url(w)).get("evalstream_scores_total", {}).values()) for w in scorers]
        assert all(d > 0 for d in done), done
        assert sum(done) >= N + sampled  # more only if a rebalance redelivered a job (same job id, one row)
        for worker in scorers:
            assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
    finally:
        for worker in scorers:
            worker.stop()
        front.stop()
