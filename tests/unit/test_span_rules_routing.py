"""Span rules (subject: span) in pipeline/routing/router.py and pipeline/rules: each matching span of a closed
trace is its own subject (decision, job, sampling by span), capped per trace; no match gives one decision."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.contracts import DecisionOutcome, JobSource, JobSubject, ScoreJob, Span, SpanStatus, Trace
from pipeline.errors import RulesError
from pipeline.routing import route_backfill, route_trace
from pipeline.rules import parse_rules
from pipeline.rules.matching import filter_mismatch
from pipeline.sampling import is_sampled, span_key
from scorers.testing import resolver

SCORERS = resolver()


def span(span_id: str, name: str = "call", span_type: str = "llm", start: int = 1, **kw: Any) -> Span:
    return Span(trace_id="t1", span_id=span_id, parent_span_id="root", name=name, span_type=span_type,
                start_ns=start, end_ns=kw.pop("end", start + 1_000_000), project="bot", **kw)


def trace(*spans: Span, trace_id: str = "t1", **kw: Any) -> Trace:
    root = Span(trace_id=trace_id, span_id="root", name="handle", start_ns=0, end_ns=10**9, project="bot")
    return Trace(trace_id=trace_id, version=kw.pop("version", 1), project="bot", status=kw.pop("status", "complete"),
                 close_reason="quiet_period", root_span_id="root", start_ns=0, end_ns=10**9,
                 spans=[root, *[s.model_copy(update={"trace_id": trace_id}) for s in spans]], **kw)


def rules(**rule: Any) -> Any:
    return parse_rules({"rules": [{"name": "per-span", "scorer": "json_output", "subject": "span", **rule}]})


def test_each_matching_span_gets_its_own_decision_and_job() -> None:
    t = trace(span("a", model="gpt-4o"), span("b", span_type="tool"), span("c", model="gpt-4o-mini", start=5))
    routed = route_trace(t, rules(filter={"span_type": "llm"}), SCORERS)
    assert [(d.span_id, d.outcome) for d in routed.decisions] == [
        ("a", DecisionOutcome.QUEUED), ("c", DecisionOutcome.QUEUED)]
    assert [(j.span_id, j.subject) for j in routed.jobs] == [("a", JobSubject.SPAN), ("c", JobSubject.SPAN)]
    job = routed.jobs[0]
    assert job.job_id == ScoreJob.make_id("per-span", "t1", 1, "a") == routed.decisions[0].job_id
    assert job.example is None and job.scorer == "json_output"
    assert len({j.job_id for j in routed.jobs}) == 2


def test_span_conditions_are_asked_of_each_span() -> None:
    err = span("e", status=SpanStatus.ERROR, model="gpt-4o", agent_name="planner", cost_usd=0.5,
               end=1 + 50_000_000)
    ok = span("k", model="gpt-4o", agent_name="planner", cost_usd=0.01)
    t = trace(err, ok)
    for flt, want in [({"has_error": True}, ["e"]), ({"has_error": False}, ["root", "k"]),
                      ({"min_duration_ms": 10}, ["root", "e"]), ({"min_cost_usd": 0.1}, ["e"]),
                      ({"model": "gpt-4o", "agent": ["planner"]}, ["e", "k"]), ({"span_name": "ca*"}, ["e", "k"]),
                      ({"attributes": {"x": 1}}, [])]:
        got = [d.span_id for d in route_trace(t, rules(filter=flt), SCORERS).decisions
               if d.outcome == DecisionOutcome.QUEUED]
        assert got == want, flt


def test_no_matching_span_gives_one_trace_level_filtered_out() -> None:
    t = trace(*[span(f"s{i}", span_type="tool") for i in range(20)])
    routed = route_trace(t, rules(filter={"span_type": "llm"}), SCORERS)
    assert routed.jobs == []
    [decision] = routed.decisions
    assert decision.outcome == DecisionOutcome.FILTERED_OUT and decision.span_id is None
    assert decision.reason == "no span of 21 matches span_type"


def test_project_and_status_are_the_traces() -> None:
    t = trace(span("a"), status="incomplete")
    [decision] = route_trace(t, rules(filter={"status": "complete"}), SCORERS).decisions
    assert decision.outcome == DecisionOutcome.FILTERED_OUT and decision.span_id is None
    assert "trace status" in decision.reason
    [decision] = route_trace(t, rules(filter={"project": "other"}), SCORERS).decisions
    assert "project" in decision.reason and decision.span_id is None


def test_sampling_is_by_rule_trace_and_span() -> None:
    t = trace(*[span(f"s{i:03d}", start=i + 1) for i in range(200)])
    ruleset = rules(sampling_rate=0.3, max_spans_per_trace=10_000, filter={"span_type": "llm"})
    first, again = route_trace(t, ruleset, SCORERS), route_trace(t, ruleset, SCORERS)
    queued = [d.span_id for d in first.decisions if d.outcome == DecisionOutcome.QUEUED]
    assert queued == [d.span_id for d in again.decisions if d.outcome == DecisionOutcome.QUEUED]
    assert 30 < len(queued) < 90  # per span, not all or nothing for the trace
    assert queued == [f"s{i:03d}" for i in range(200) if is_sampled(span_key("t1", f"s{i:03d}"), "per-span", 0.3)]
    sampled_out = [d for d in first.decisions if d.outcome == DecisionOutcome.SAMPLED_OUT]
    assert len(sampled_out) == 200 - len(queued) and sampled_out[0].reason == "sampling_rate=0.3"


def test_the_cap_keeps_the_first_spans_in_start_order() -> None:
    spans = [span(f"s{i:04d}", start=10_000 - i) for i in range(120)]  # listed in reverse start order
    routed = route_trace(trace(*spans), rules(filter={"span_type": "llm"}), SCORERS)
    assert len(routed.jobs) == 50 and len(routed.decisions) == 120
    kept = {j.span_id for j in routed.jobs}
    assert kept == {f"s{i:04d}" for i in range(70, 120)}  # the 50 that started first
    capped = [d for d in routed.decisions if d.outcome == DecisionOutcome.SAMPLED_OUT]
    assert len(capped) == 70 and all(d.span_id not in kept for d in capped)
    assert capped[0].reason.startswith("over max_spans_per_trace=50")

    routed = route_trace(trace(*spans), rules(max_spans_per_trace=3), SCORERS)
    assert len(routed.jobs) == 3


def test_the_cap_is_bounded_and_for_span_rules_only() -> None:
    for bad in (0, 10_001):
        with pytest.raises(RulesError, match="max_spans_per_trace"):
            rules(max_spans_per_trace=bad)
    with pytest.raises(RulesError, match="span rules only"):
        parse_rules({"rules": [{"name": "r", "scorer": "json_output", "max_spans_per_trace": 5}]})


def test_backfill_routes_span_rules_with_their_own_job_ids() -> None:
    t = trace(span("a"), span("b"))
    routed = route_backfill(t, rules(filter={"span_type": "llm"}), ["per-span"])
    assert [(d.span_id, d.outcome, d.source) for d in routed.decisions if d.span_id] == [
        ("a", DecisionOutcome.QUEUED, JobSource.BACKFILL), ("b", DecisionOutcome.QUEUED, JobSource.BACKFILL)]
    assert {j.job_id for j in routed.jobs} == {
        ScoreJob.make_id("per-span", "t1", 1, s, source=JobSource.BACKFILL) for s in ("a", "b")}
    live = route_trace(t, rules(filter={"span_type": "llm"}), SCORERS)
    assert not {j.job_id for j in live.jobs} & {j.job_id for j in routed.jobs}


def test_model_and_agent_serve_trace_rules_as_any_span() -> None:
    ruleset = parse_rules({"rules": [{"name": "r", "scorer": "error_spans", "filter": {"model": "gpt-4o"}}]})
    assert filter_mismatch(ruleset.rules[0].filter, trace(span("a", model="gpt-4o"))) is None
    assert filter_mismatch(ruleset.rules[0].filter, trace(span("a", model="other"))) == "no span matches model"
    [decision] = route_trace(trace(span("a", model="gpt-4o")), ruleset, SCORERS).decisions
    assert decision.outcome == DecisionOutcome.QUEUED and decision.span_id is None


def test_session_rules_refuse_model_and_agent() -> None:
    with pytest.raises(RulesError, match="model"):
        parse_rules({"rules": [{"name": "s", "scorer": "session_length", "subject": "session",
                                "filter": {"model": "x"}}]})
