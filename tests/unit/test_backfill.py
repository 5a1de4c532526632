"""pipeline/backfill: spec and identity, checkpoint, paging stored traces, packing, backfill routing. (The row
mapping and the SQL are tested with storage: test_storage_wire.py, test_storage_filters.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipeline.backfill import BackfillSpec, Checkpoint, check_rules, checkpoint_path
from pipeline.backfill.checkpoint import RunLock
from pipeline.backfill.publisher import pack
from pipeline.backfill.stored import StoredTraces, Window
from pipeline.contracts import (
    BackfillBatch,
    DecisionOutcome,
    ErrorInfo,
    JobSource,
    ScoreJob,
    Span,
    Trace,
    decode,
)
from pipeline.errors import ConfigError
from pipeline.routing import route_backfill, route_trace
from pipeline.rules import parse_rules
from pipeline.sampling import is_sampled
from scorers.registry import ScorerResolver
from tests.unit.test_storage_wire import stored

NOW = 1_800_000_000.0
RULES = parse_rules({"rules": [
    {"name": "half", "scorer": "error_spans", "sampling_rate": 0.5},
    {"name": "billing", "scorer": "error_spans", "filter": {"project": "billing"}},
    {"name": "latency", "scorer": "trace_latency", "params": {"max_ms": 100}},
    {"name": "off", "scorer": "error_spans", "enabled": False},
]})


def make_trace(trace_id: str = "t-1", version: int = 1, project: str = "bot") -> Trace:
    spans = [
        Span(trace_id=trace_id, span_id="root", name="handle", start_ns=1_000_000, end_ns=9_000_000, project=project,
             inputs={"q": "refund?"}, outputs="plain text", attributes={"user": "u1", "n": 2}, service="api"),
        Span(trace_id=trace_id, span_id="llm", parent_span_id="root", name="answer", span_type="llm",
             start_ns=2_000_000, end_ns=8_000_000, status="error", error=ErrorInfo(type="RateLimit", message="429"),
             project=project, agent_name="support", model="gpt-x", input_tokens=10, output_tokens=5,
             total_tokens=15, cost_usd=0.001),
    ]
    return Trace(trace_id=trace_id, version=version, project=project, status="complete", close_reason="quiet_period",
                 root_span_id="root", name="handle", start_ns=1_000_000, end_ns=9_000_000,
                 closed_at_ns=10_000_000, spans=spans)


# -- paging stored traces -------------------------------------------------------------------------------

def test_a_page_follows_the_cursor_and_ends_with_the_next_one() -> None:
    window = Window("evalstream", 100, 200, project="o'brien")
    trace = make_trace()
    trace_row, span_rows = stored(trace)
    answers = iter([[trace_row[:-1]], span_rows])  # TRACE_SELECT: no span_count
    seen: list[str] = []

    def query(sql: str) -> list[list]:
        seen.append(sql)
        return next(answers)

    page = StoredTraces(window, query).page(None, 10)
    assert [t["trace_id"] for t in page.traces] == ["t-1"] and page.last == (10_000, "t-1")
    assert "FROM evalstream.spans WHERE trace_id IN ('t-1')" in seen[1]
    empty = StoredTraces(window, lambda sql: []).page((5, "a"), 10)
    assert empty.traces == [] and empty.last == (5, "a")


# -- spec, rules, checkpoint ---------------------------------------------------------------------------

def test_identity_is_the_arguments_as_given_so_a_relative_since_resumes_later() -> None:
    a = BackfillSpec.of(["b", "a", "a"], "7d")
    assert a.rules == ("a", "b") and a.identity == BackfillSpec.of(["a", "b"], " 7d ").identity
    assert a.identity != BackfillSpec.of(["a"], "7d").identity
    assert a.identity != BackfillSpec.of(["a", "b"], "7d", project="p").identity
    assert a.window_us(NOW) == (int((NOW - 7 * 86400) * 1e6), int(NOW * 1e6))
    assert BackfillSpec.of(["a"], "2026-01-01", "2026-01-02").window_us(NOW)[1] - \
        BackfillSpec.of(["a"], "2026-01-01").window_us(NOW)[0] == 86400 * 10**6
    with pytest.raises(ConfigError, match="not before"):
        BackfillSpec.of(["a"], "1h", "2h").window_us(NOW)
    with pytest.raises(ConfigError, match="duration like"):
        BackfillSpec.of(["a"], "yesterday").window_us(NOW)
    with pytest.raises(ConfigError, match="at least one rule"):
        BackfillSpec.of([" "], "1d")


def test_unknown_or_disabled_rules_are_refused_naming_the_active_ones() -> None:
    check_rules(RULES, ("half", "latency"), "rules.yaml")
    with pytest.raises(ConfigError) as info:
        check_rules(RULES, ("half", "nope", "off"), "rules.yaml")
    message = str(info.value)
    assert "unknown rules nope, off (off is disabled)" in message
    assert "active rules in rules.yaml: half, billing, latency" in message


def test_checkpoint_round_trips_and_is_named_by_identity(tmp_path: Path) -> None:
    spec = BackfillSpec.of(["half"], "7d")
    path = checkpoint_path(tmp_path, spec)
    assert path == tmp_path / "backfill" / f"{spec.identity}.json"
    assert Checkpoint.load(path) is None
    cp = Checkpoint.new(spec, spec.window_us(NOW), 10)
    cp.sent, cp.cursor = 4, [123, "t-4"]
    cp.save(path)
    again = Checkpoint.load(path)
    assert again == cp and not again.done
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    path.write_text("{")
    with pytest.raises(ConfigError, match="--restart"):
        Checkpoint.load(path)


def test_run_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(str(holder.pid))
        with pytest.raises(ConfigError, match=f"already running \\(pid {holder.pid}\\)"), RunLock(lock):
            pass
    finally:
        holder.kill()
        holder.wait()
    with RunLock(lock):
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


# -- packing -------------------------------------------------------------------------------------------

def test_messages_carry_many_traces_under_the_size_limit_and_decode_as_the_contract() -> None:
    traces = [make_trace(f"t-{i}").model_dump(mode="json") for i in range(25)]
    packed = pack("bf1", ["half"], traces, max_bytes=1_000_000, max_traces=10)
    assert packed.counts == [10, 10, 5] and packed.oversized == []
    batches = [decode(m, BackfillBatch) for m in packed.messages]
    assert [t.trace_id for b in batches for t in b.traces] == [f"t-{i}" for i in range(25)]
    assert batches[0].rules == ["half"] and batches[0].backfill_id == "bf1"
    assert batches[0].traces[0] == make_trace("t-0")

    one = len(orjson.dumps(traces[0]))
    small = pack("bf1", ["half"], traces[:5], max_bytes=2 * one + 300, target_bytes=2 * one + 10)
    assert small.counts == [2, 2, 1] and all(len(m) <= 2 * one + 300 for m in small.messages)
    huge = dict(traces[1], trace_id="big", spans=[dict(traces[1]["spans"][0], inputs="x" * 5000)])
    skipped = pack("bf1", ["half"], [traces[0], huge, traces[2]], max_bytes=one + 1000)
    assert skipped.oversized == ["big"] and skipped.counts == [1, 1]


# -- routing -------------------------------------------------------------------------------------------

def test_backfill_routes_only_the_named_rules_with_live_filters_and_sampling() -> None:
    sampled = 0
    for i in range(200):
        trace = make_trace(f"t-{i}")
        routed = route_backfill(trace, RULES, ["half", "billing"])
        decisions = {d.rule: d for d in routed.decisions}
        assert set(decisions) == {"half", "billing"}
        assert decisions["billing"].outcome == DecisionOutcome.FILTERED_OUT
        expected = is_sampled(trace.trace_id, "half", 0.5)
        assert (decisions["half"].outcome == DecisionOutcome.QUEUED) is expected
        assert all(d.source == JobSource.BACKFILL for d in routed.decisions)
        assert all(j.source == JobSource.BACKFILL for j in routed.jobs)
        sampled += expected
    assert 60 < sampled < 140


def test_backfill_jobs_have_their_own_stable_ids() -> None:
    trace = make_trace()
    live = route_trace(trace, RULES, ScorerResolver()).jobs[0]
    (backfill,) = route_backfill(trace, RULES, ["latency"]).jobs
    assert backfill.job_id == route_backfill(trace, RULES, ["latency"]).jobs[0].job_id  # re-sent: same rows
    assert backfill.job_id == ScoreJob.make_id("latency", "t-1", 1, source=JobSource.BACKFILL)
    assert live.job_id == ScoreJob.make_id(live.rule, "t-1", 1)  # live ids did not change
    assert backfill.job_id != ScoreJob.make_id("latency", "t-1", 1)


def test_a_rule_the_worker_does_not_have_gets_a_failed_decision() -> None:
    routed = route_backfill(make_trace(), RULES, ["latency", "gone", "off"])
    decisions = {d.rule: d for d in routed.decisions}
    assert decisions["latency"].outcome == DecisionOutcome.QUEUED
    for name in ("gone", "off"):
        assert decisions[name].outcome == DecisionOutcome.FAILED and "no active rule" in decisions[name].reason
        assert decisions[name].source == JobSource.BACKFILL
