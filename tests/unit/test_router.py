"""pipeline/routing/router.py: a decision for every active rule, a job for every sampled one."""

from __future__ import annotations

from typing import Any

from pipeline.contracts import (
    DecisionOutcome,
    EvaluationRequest,
    Example,
    JobSource,
    ScoreJob,
    Span,
    Trace,
)
from pipeline.routing import route_trace
from pipeline.rules import parse_rules
from pipeline.sampling import is_sampled
from scorers.testing import resolver

SCORERS = resolver()

RULES = parse_rules({"rules": [
    {"name": "slow", "scorer": "trace_latency", "params": {"max_ms": 100}, "threshold": 50.0},
    {"name": "other-project", "scorer": "error_spans", "filter": {"project": "billing"}},
    {"name": "never", "scorer": "error_spans", "sampling_rate": 0},
    {"name": "off", "scorer": "error_spans", "enabled": False},
    {"name": "tools", "scorer": "repeated_tool_calls", "filter": {"span_type": "tool"}},
]})


def make_trace(trace_id: str = "trace-1", version: int = 1, evaluations: list[EvaluationRequest] | None = None,
               **kw: Any) -> Trace:
    spans = [
        Span(trace_id=trace_id, span_id="root", name="handle", start_ns=0, end_ns=10, project="bot"),
        Span(trace_id=trace_id, span_id="llm-1", parent_span_id="root", name="answer", span_type="llm",
             start_ns=1, end_ns=9, project="bot", evaluations=evaluations or []),
    ]
    return Trace(trace_id=trace_id, version=version, project="bot", status="complete",
                 close_reason="quiet_period", root_span_id="root", start_ns=0, end_ns=10, spans=spans, **kw)


def by_rule(routed) -> dict[str, Any]:
    return {d.rule: d for d in routed.decisions}


def test_a_decision_for_every_active_rule() -> None:
    routed = route_trace(make_trace(), RULES, SCORERS)
    decisions = by_rule(routed)
    assert len(routed.decisions) == 4
    assert set(decisions) == {"slow", "other-project", "never", "tools"}  # not the disabled one

    assert decisions["slow"].outcome == DecisionOutcome.QUEUED
    filtered = decisions["other-project"]
    assert filtered.outcome == DecisionOutcome.FILTERED_OUT and "billing" in filtered.reason
    assert filtered.job_id is None
    never = decisions["never"]
    assert never.outcome == DecisionOutcome.SAMPLED_OUT and never.reason == "sampling_rate=0"
    tools = decisions["tools"]
    assert tools.outcome == DecisionOutcome.FILTERED_OUT and "span_type" in tools.reason
    for d in routed.decisions:
        assert d.trace_id == "trace-1" and d.trace_version == 1 and d.project == "bot"
        assert d.source == JobSource.LIVE and d.decided_at_ns > 0


def test_jobs_only_for_sampled_rules_and_carry_the_rule() -> None:
    routed = route_trace(make_trace(), RULES, SCORERS)
    assert [j.rule for j in routed.jobs] == ["slow"]
    job = routed.jobs[0]
    assert job.scorer == "trace_latency" and job.params == {"max_ms": 100} and job.threshold == 50.0
    assert job.trace_id == "trace-1" and job.trace_version == 1
    assert job.span_id is None and job.example is None
    assert by_rule(routed)["slow"].job_id == job.job_id


def test_job_ids_are_deterministic() -> None:
    first = route_trace(make_trace(), RULES, SCORERS).jobs[0]
    again = route_trace(make_trace(), RULES, SCORERS).jobs[0]
    assert first.job_id == again.job_id == ScoreJob.make_id("slow", "trace-1", 1)
    v2 = route_trace(make_trace(version=2), RULES, SCORERS).jobs[0]
    other = route_trace(make_trace(trace_id="trace-2"), RULES, SCORERS).jobs[0]
    assert len({first.job_id, v2.job_id, other.job_id}) == 3


def test_disabled_rules_produce_nothing() -> None:
    only_disabled = parse_rules({"rules": [{"name": "off", "scorer": "error_spans", "enabled": False}]})
    routed = route_trace(make_trace(), only_disabled, SCORERS)
    assert routed.decisions == [] and routed.jobs == []


def test_partial_sampling_agrees_with_is_sampled() -> None:
    rules = parse_rules({"rules": [{"name": "half", "scorer": "error_spans", "sampling_rate": 0.5}]})
    queued = 0
    for i in range(300):
        trace = make_trace(trace_id=f"t-{i}")
        routed = route_trace(trace, rules, SCORERS)
        (decision,) = routed.decisions
        expected = is_sampled(trace.trace_id, "half", 0.5)
        assert (decision.outcome == DecisionOutcome.QUEUED) is expected
        assert len(routed.jobs) == int(expected)
        if not expected:
            assert decision.outcome == DecisionOutcome.SAMPLED_OUT and decision.reason == "sampling_rate=0.5"
        queued += expected
    assert 100 < queued < 200


def test_only_rule_routes_just_that_rule_and_no_sdk_requests() -> None:
    trace = make_trace(evaluations=[EvaluationRequest(scorer="mod:judge")])
    routed = route_trace(trace, RULES, SCORERS, only_rule="never", source=JobSource.BACKFILL)
    assert [d.rule for d in routed.decisions] == ["never"]
    assert routed.jobs == []
    assert routed.decisions[0].source == JobSource.BACKFILL


def test_backfill_source_is_carried_to_jobs() -> None:
    routed = route_trace(make_trace(), RULES, SCORERS, source=JobSource.BACKFILL)
    assert routed.jobs[0].source == JobSource.BACKFILL


def test_async_evaluate_request_becomes_an_sdk_job_with_the_example() -> None:
    request = EvaluationRequest(scorer="my-judge", threshold=0.7, params={"guidelines": ["be brief"]},
                                example={"inputs": {"q": "refund?"}, "outputs": "sure", "expected": "yes",
                                         "context": ["doc"], "metadata": {"lang": "en"}})
    listed = parse_rules({"sdk_evaluations": {"scorers": [
        {"name": "my-judge", "scorer": "helpfulness", "params": {"model": "openai/m", "api_base": "http://j/v1"}}]}})
    routed = route_trace(make_trace(evaluations=[request]), listed, SCORERS)
    (job,) = routed.jobs
    assert job.rule == "sdk:my-judge"
    assert job.scorer == "helpfulness"
    assert job.params == {"guidelines": ["be brief"], "model": "openai/m", "api_base": "http://j/v1"}
    assert job.span_id == "llm-1" and job.threshold == 0.7
    assert job.example == Example(inputs={"q": "refund?"}, outputs="sure", expected="yes", context=["doc"],
                                  metadata={"lang": "en"})
    assert job.job_id == ScoreJob.make_id("sdk:my-judge", "trace-1", 1, "llm-1")
    (decision,) = routed.decisions
    assert decision.rule == job.rule and decision.outcome == DecisionOutcome.QUEUED
    assert decision.job_id == job.job_id


def test_sdk_requests_are_routed_alongside_rules() -> None:
    routed = route_trace(make_trace(evaluations=[EvaluationRequest(scorer="error_spans")]), RULES, SCORERS)
    assert [j.rule for j in routed.jobs] == ["slow", "sdk:error_spans"]
    assert len(routed.decisions) == 5


def test_sdk_request_sampled_out() -> None:
    request = EvaluationRequest(scorer="error_spans", sampling_rate=0.0)
    routed = route_trace(make_trace(evaluations=[request]), parse_rules({}), SCORERS)
    assert routed.jobs == []
    (decision,) = routed.decisions
    assert decision.rule == "sdk:error_spans" and decision.outcome == DecisionOutcome.SAMPLED_OUT
    assert decision.reason == "sampling_rate=0"


def test_malformed_sdk_example_does_not_block_the_rules() -> None:
    bad = EvaluationRequest(scorer="error_spans", example={"metadata": "not-a-dict"})
    routed = route_trace(make_trace(evaluations=[bad]), RULES, SCORERS)
    assert "slow" in [j.rule for j in routed.jobs]
