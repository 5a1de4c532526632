"""`evalstream backfill` over 10k stored traces: killed part-way, resumed, one current score per (rule, trace)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from pipeline.sampling import is_sampled
from tests.integration.harness import WorkerProcess

pytestmark = pytest.mark.integration

N_TRACES = 10_000
DB = "evalstream"
RULES = """
rules:
  - name: errors
    scorer: error_spans
    filter: {project: itest}
    sampling_rate: 0.5
  - name: latency
    scorer: trace_latency
    params: {max_ms: 100}
"""
REPO = Path(__file__).resolve().parents[2]


def trace_id(i: int) -> str:
    return f"h{i:05d}"


def project_of(i: int) -> str:
    return "other" if i % 100 == 7 else "itest"  # filtered out by the rule


def seed(data_dir: str, n: int) -> None:
    """Store n traces (and a few live results) straight into chDB, as the sink would have.
    Every 500th trace has a second version with one more span; one trace closed 8 days ago."""
    from pipeline.contracts import Decision, DecisionOutcome, ScoreResult, ScoreStatus, Span, Trace
    from pipeline.storage import rows
    from pipeline.storage.client import embedded_dsn
    from pipeline.storage.database import Database
    from pipeline.storage.sink import _TABLES

    now_ns = time.time_ns()
    batch: dict[str, list[list]] = {"traces": [], "spans": [], "decisions": [], "scores": []}

    def add(i: int, version: int, closed_ns: int) -> None:
        tid, start = trace_id(i), closed_ns - 5_000_000_000
        spans = [Span(trace_id=tid, span_id=f"{tid}-r", name="handle", start_ns=start, end_ns=start + 60_000_000,
                      status="ok", project=project_of(i), inputs={"q": f"question {i}"}, outputs="plain answer")]
        spans += [Span(trace_id=tid, span_id=f"{tid}-{j}", parent_span_id=f"{tid}-r", name=f"tool{j}",
                       span_type="tool", start_ns=start + j * 1_000_000, end_ns=start + j * 1_000_000 + 5_000_000,
                       status="error" if (i % 10 == 0 and j == 0) else "ok", project=project_of(i),
                       attributes={"k": j}) for j in range(version + 1)]
        trace = Trace(trace_id=tid, version=version, project=project_of(i), status="complete",
                      close_reason="quiet_period", root_span_id=f"{tid}-r", name="handle", start_ns=start,
                      end_ns=start + 60_000_000, closed_at_ns=closed_ns, spans=spans)
        batch["traces"].append(rows.trace_row(trace))
        batch["spans"] += [rows.span_row(s, version) for s in spans]

    base = now_ns - 3 * 3600 * 10**9
    for i in range(n):
        add(i, 1, base + i * 10**6)
        if i % 500 == 3:
            add(i, 2, base + (n + i) * 10**6)
    add(n, 1, now_ns - 8 * 86400 * 10**9)  # outside --since 7d
    for i in range(200):  # live results from before: the backfill's become current, these stay for audit
        if project_of(i) != "itest":
            continue
        sampled = is_sampled(trace_id(i), "errors", 0.5)
        job_id = f"live-{i}"
        batch["decisions"].append(rows.decision_row(Decision(
            rule="errors", trace_id=trace_id(i), trace_version=1, job_id=job_id if sampled else None,
            outcome=DecisionOutcome.SCORED if sampled else DecisionOutcome.SAMPLED_OUT, project="itest",
            decided_at_ns=base)))
        if sampled:
            batch["scores"].append(rows.score_row(ScoreResult(
                job_id=job_id, rule="errors", scorer="error_spans", trace_id=trace_id(i), trace_version=1,
                project="itest", status=ScoreStatus.SCORED, value=1.0, passed=True, scored_at_ns=base)))
    db = Database(embedded_dsn(Path(data_dir) / "clickhouse"), DB)
    db.open_sync(30)
    db._insert_many(batch, _TABLES)
    db._client.close()


def cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def checkpoint(data: Path) -> dict:
    found = [p for p in (data / "backfill").glob("*.json")] if (data / "backfill").exists() else []
    try:
        return orjson.loads(found[0].read_bytes()) if found else {}
    except orjson.JSONDecodeError:
        return {}


def test_backfill_resumes_after_a_kill_and_leaves_one_current_score_per_rule_and_trace(
        broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    data = tmp_path / "data"
    data.mkdir()
    started = time.monotonic()
    code = f"from tests.integration.test_backfill import seed; seed({str(data)!r}, {N_TRACES})"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
    seeded_s = time.monotonic() - started

    worker = WorkerProcess(data, broker, rules).start()
    env = {**os.environ, "EVALSTREAM_DATA_DIR": str(data), "EVALSTREAM_KAFKA_BOOTSTRAP": broker,
           "EVALSTREAM_TOPIC_PARTITIONS": "4"}
    command = ["backfill", "--rule", "errors", "--since", "7d", "--rules", str(rules), "--page-size", "500"]
    try:
        # Unknown names are refused, naming the rules there are.
        unknown = cli(env, "backfill", "--rule", "nope", "--since", "7d", "--rules", str(rules))
        assert unknown.returncode == 2 and "unknown rule nope" in unknown.stderr
        assert "errors, latency" in unknown.stderr

        # SIGKILL part-way: the checkpoint holds only what the broker acknowledged.
        first = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *command, "--no-wait"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while checkpoint(data).get("sent", 0) < 2000:
            assert first.poll() is None, "the first run ended before it was killed"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        at_kill = checkpoint(data)
        assert 2000 <= at_kill["sent"] < N_TRACES and at_kill["sent_all_at"] is None

        resumed_at = time.monotonic()
        second = cli(env, *command)
        resume_s = time.monotonic() - resumed_at
        assert second.returncode == 0, second.stderr + worker.log_tail()
        assert f"resuming from trace {at_kill['cursor'][1]}" in second.stderr, second.stderr
        assert f"{N_TRACES:,} traces sent" in second.stdout, second.stdout
        done = checkpoint(data)
        assert done["sent"] == N_TRACES and done["total"] == N_TRACES and done["skipped"] == []

        traces = [trace_id(i) for i in range(N_TRACES)]
        in_project = {t for i, t in enumerate(traces) if project_of(i) == "itest"}
        sampled = {t for t in in_project if is_sampled(t, "errors", 0.5)}
        decisions = {r[0]: r[1:] for r in worker.query(
            f"SELECT trace_id, outcome, source, trace_version FROM {DB}.decisions_current WHERE rule = 'errors'")}
        assert set(decisions) == set(traces)  # every trace in the window, not the one from 8 days ago
        assert {d[1] for d in decisions.values()} == {"backfill"}
        assert {t for t, d in decisions.items() if d[0] == "scored"} == sampled
        assert {t for t, d in decisions.items() if d[0] == "filtered_out"} == set(traces) - in_project
        assert {t for t, d in decisions.items() if d[0] == "sampled_out"} == in_project - sampled
        assert {t: d[2] for t, d in decisions.items() if d[2] != 1} == {
            trace_id(i): 2 for i in range(N_TRACES) if i % 500 == 3}  # the newest version was backfilled
        assert worker.scalar(f"SELECT count() FROM {DB}.decisions WHERE rule = 'latency'") == 0

        # Exactly one current score per (rule, trace), from the backfill, for every sampled trace. A scored
        # decision is the sink's reading of its score's message, so they land together; the wait is a guard.
        worker.wait_for(lambda: worker.scalar(f"SELECT count() FROM {DB}.scores_current WHERE rule = 'errors' "
                                              f"AND source = 'backfill'") >= len(sampled), timeout_s=30,
                        what="every backfill score stored")
        assert worker.query(f"SELECT rule, trace_id, count() FROM {DB}.scores_current "
                            f"GROUP BY ALL HAVING count() > 1") == []
        scores = {r[0]: r[1:] for r in worker.query(
            f"SELECT trace_id, source, passed, trace_version FROM {DB}.scores_current WHERE rule = 'errors'")}
        assert set(scores) == sampled and {s[0] for s in scores.values()} == {"backfill"}
        failing = {t for t in sampled if int(t[1:]) % 10 == 0}
        assert {t for t, s in scores.items() if s[1] is False} == failing
        assert worker.scalar(f"SELECT count() FROM {DB}.scores FINAL WHERE rule = 'errors' "
                             f"AND trace_id = '{trace_id(3)}' AND trace_version = 2 AND source = 'backfill'") \
            == int(trace_id(3) in sampled)
        live = worker.scalar(f"SELECT count() FROM {DB}.scores FINAL WHERE source = 'live'")
        assert live == len([t for t in sampled if int(t[1:]) < 200])  # kept for audit, not current

        # Running the same command again sends nothing and reports the same decisions.
        third = cli(env, *command)
        assert third.returncode == 0 and "sent everything" in third.stderr, third.stderr
        assert f"scored {len(sampled):,}" in third.stdout, third.stdout
    finally:
        worker.stop()
    print(f"\nseed {seeded_s:.1f}s, resume+wait {resume_s:.1f}s, total {time.monotonic() - started:.1f}s")
