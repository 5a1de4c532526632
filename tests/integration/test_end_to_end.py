"""Spans in -> traces assembled -> sampled -> scored -> stored -> alerted, on Tansu and chDB."""

from __future__ import annotations

import operator
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import topics
from pipeline.contracts import DecisionBatch, TraceBatch, decode
from pipeline.sampling import is_sampled
from tests.integration.harness import WorkerProcess, batch, produce, read_topic, span
from tests.integration.slack_server import SlackServer

pytestmark = pytest.mark.integration

N_TRACES = 120
RULES = """
rules:
  - name: errors
    scorer: error_spans
    filter: {project: itest}
  - name: latency
    scorer: trace_latency
    params: {max_ms: 100}
    sampling_rate: 0.5
  - name: other-project
    scorer: error_spans
    filter: {project: somewhere-else}
alerts:
  - name: error-alert
    rule: errors
    condition: failed
    cooldown_s: 0      # every failure reported as it comes
    window_s: 3600
"""


def make_trace(i: int) -> tuple[str, list[dict]]:
    trace_id = f"t{i:05d}"
    root = span(trace_id, f"{trace_id}-root", None, "handle", dur_ms=50 + (i % 4) * 40)
    children = [span(trace_id, f"{trace_id}-c{j}", root["span_id"], f"tool{j}", start_ms=j, span_type="tool",
                     status="error" if (i % 10 == 0 and j == 0) else "ok") for j in range(4)]
    return trace_id, [root, *children]


def test_traces_are_assembled_sampled_scored_stored_and_alerted(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    rng = random.Random(1)
    expected_spans: dict[str, int] = {}
    messages: list[tuple[bytes, bytes]] = []
    for i in range(N_TRACES):
        trace_id, spans = make_trace(i)
        expected_spans[trace_id] = len(spans)
        rng.shuffle(spans)  # out of order: the root may come first or last
        first, second = spans[:2], spans[2:]
        messages.append((trace_id.encode(), batch(trace_id, first)))
        messages.append((trace_id.encode(), batch(trace_id, second)))
        if i % 7 == 0:  # redelivered batch: duplicates must count once
            messages.append((trace_id.encode(), batch(trace_id, first)))
    # A trace whose root never ends: closed as incomplete after the idle timeout.
    orphan = [span("orphan", "orphan-c1", "orphan-root", "tool", span_type="tool")]
    messages.append((b"orphan", batch("orphan", orphan)))
    expected_spans["orphan"] = 1
    # Bad input: not JSON, wrong schema, oversized.
    messages += [(b"bad1", b"\xffnot json"), (b"bad2", b'{"v": 1, "spans": "nope"}'),
                 (b"bad3", b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}')]

    with SlackServer() as slack:
        worker = WorkerProcess(tmp_path / "data", broker, rules,
                               {"EVALSTREAM_SLACK_WEBHOOK_URL": slack.url,
                                "EVALSTREAM_MAX_MESSAGE_BYTES": str(1024 * 1024)}).start()
        try:
            produce(broker, messages)
            db = "evalstream"
            worker.wait_for(lambda: worker.scalar(f"SELECT count() FROM {db}.traces_current") >= N_TRACES + 1,
                            what="all traces stored")

            # A late span re-opens a closed trace: version 2, re-scored.
            late = span("t00003", "t00003-late", "t00003-root", "late-tool", span_type="tool", start_ms=30)
            produce(broker, [(b"t00003", batch("t00003", [late]))])
            expected_spans["t00003"] += 1
            worker.wait_for(lambda: worker.scalar(
                f"SELECT max(version) FROM {db}.traces WHERE trace_id = 't00003'") == 2, what="version 2")

            sampled = {("errors", t) for t in expected_spans if t != "orphan"}  # project filter drops nothing else
            sampled |= {("errors", "orphan")}
            sampled |= {("latency", t) for t in expected_spans if is_sampled(t, "latency", 0.5)}

            def all_scored() -> bool:
                rows = worker.query(f"SELECT rule, trace_id FROM {db}.scores_current WHERE trace_version = "
                                    f"if(trace_id = 't00003', 2, 1)")
                return {tuple(r) for r in rows} == sampled
            worker.wait_for(all_scored, what="every sampled (rule, trace) scored")

            # Every trace assembled with all its spans; the orphan closed as incomplete.
            rows = worker.query(f"SELECT trace_id, span_count, status FROM {db}.traces_current")
            assert {r[0]: r[1] for r in rows} == expected_spans
            assert {r[0]: r[2] for r in rows}["orphan"] == "incomplete"
            span_rows = dict(worker.query(f"SELECT trace_id, count() FROM {db}.spans FINAL GROUP BY trace_id"))
            assert span_rows == expected_spans

            # Exactly one current score per sampled (rule, trace) and no duplicates after FINAL.
            dupes = worker.query(f"SELECT rule, trace_id, count() c FROM {db}.scores_current "
                                 f"GROUP BY rule, trace_id HAVING c > 1")
            assert dupes == []
            versions = dict(worker.query(f"SELECT rule, groupArray(trace_version) FROM {db}.scores FINAL "
                                         f"WHERE trace_id = 't00003' GROUP BY rule"))
            assert {rule: sorted(v) for rule, v in versions.items()} == {
                rule: [1, 2] for rule, t in sampled if t == "t00003"}  # both versions kept for audit

            # Sampling: the stored set is the deterministic function's set, near the rate.
            latency = {r[0] for r in worker.query(f"SELECT trace_id FROM {db}.scores_current WHERE rule = 'latency'")}
            assert latency == {t for t in expected_spans if is_sampled(t, "latency", 0.5)}
            assert abs(len(latency) / len(expected_spans) - 0.5) < 0.15

            # A decision row for every (rule, trace) pair, with the right outcome.
            decisions = {(r[0], r[1]): r[2] for r in worker.query(
                f"SELECT rule, trace_id, outcome FROM {db}.decisions_current")}
            for trace_id in expected_spans:
                assert decisions[("other-project", trace_id)] == "filtered_out"
                assert decisions[("errors", trace_id)] == "scored"
                want = "scored" if ("latency", trace_id) in sampled else "sampled_out"
                assert decisions[("latency", trace_id)] == want

            # The scorer sent no decisions (issue 19): no message carried a scored or failed decision (routing's
            # travel with the traces, and nothing here is deferred, backfilled or a session), yet every result has
            # its decision row, which the sink derived from the result: the same job, version and outcome,
            # decided when the result was produced.
            sent = [d for _, _, raw in read_topic(broker, topics.DECISIONS) for d in decode(raw, DecisionBatch).decisions]
            routed = [d for _, _, raw in read_topic(broker, topics.TRACES) for d in decode(raw, TraceBatch).decisions]
            assert routed and {d.outcome for d in routed} == {"filtered_out", "sampled_out", "queued"}
            assert [d for d in sent if d.outcome in ("scored", "failed")] == []

            def results_and_their_decisions() -> tuple[list[tuple], list[tuple]]:
                results = worker.query(f"SELECT rule, trace_id, trace_version, job_id, if(status = 'scored', "
                                       f"'scored', 'failed'), scored_at FROM {db}.scores FINAL")
                derived = worker.query(f"SELECT rule, trace_id, trace_version, job_id, outcome, decided_at "
                                       f"FROM {db}.decisions FINAL WHERE outcome IN ('scored', 'failed')")
                return sorted(map(tuple, results)), sorted(map(tuple, derived))

            worker.wait_for(lambda: operator.eq(*results_and_their_decisions()), timeout_s=30,
                            what="a decision row per stored result")
            results, derived = results_and_their_decisions()
            assert len(results) == len(sampled) + sum(1 for _, t in sampled if t == "t00003")  # + t00003's v1
            assert derived == results

            # Failing traces opened one incident: a firing, then every later failure reported in a message
            # (cooldown 0), each delivered to Slack through slack-sdk and stored as delivered.
            failing = {t for t in expected_spans if t != "orphan" and int(t[1:]) % 10 == 0}

            def reported() -> list[str]:
                return [t for (ids,) in worker.query(f"SELECT trace_ids FROM {db}.alerts FINAL") for t in ids]

            worker.wait_for(lambda: len(reported()) >= len(failing), what="every failure reported")
            stored = worker.query(f"SELECT delivery_status, kind FROM {db}.alerts FINAL")
            assert {s for s, _ in stored} == {"delivered"}
            assert sorted(k for _, k in stored).count("firing") == 1
            assert sorted(reported()) == sorted(failing)
            assert len(slack.messages) == len(stored)

            # Bad input went to dead letters with a reason; the worker kept going.
            dead = worker.query(f"SELECT key, error_type FROM {db}.dead_letters FINAL ORDER BY key")
            assert [d[0] for d in dead] == ["bad1", "bad2", "bad3"]
            assert dead[2][1] == "OversizedError"

            # The CLI reads through the running worker (chDB has one opener).
            env = {**os.environ, "EVALSTREAM_DATA_DIR": str(worker.data_dir)}
            out = subprocess.run([sys.executable, "-m", "pipeline.cli", "sql",
                                  "SELECT count() AS n FROM evalstream.traces_current", "--format", "csv"], env=env,
                                 capture_output=True, text=True, timeout=60, check=False)
            assert out.returncode == 0, out.stderr
            assert out.stdout.split() == ["n", str(len(expected_spans))]
            why = subprocess.run([sys.executable, "-m", "pipeline.cli", "why", "t00003"], env=env,
                                 capture_output=True, text=True, timeout=60, check=False)
            assert why.returncode == 0, why.stderr
            assert "other-project" in why.stdout and "filtered_out" in why.stdout
        finally:
            worker.stop()
        # A clean stop withdraws the query endpoint, so the CLI opens chDB directly afterwards.
        assert worker.process.returncode == 0, worker.log_tail()
        assert "query_url" not in (worker.data_dir / "run.json").read_text(errors="replace") \
            if (worker.data_dir / "run.json").exists() else True
