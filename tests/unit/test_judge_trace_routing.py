"""The pipeline does not judge its own judges (pipeline/routing/judge_traces.py): a trace of project
evalstream-judges is skipped, without a decision, by every rule that does not name that project."""

from __future__ import annotations

from pipeline.contracts import DecisionOutcome, Span, Trace
from pipeline.contracts.evaluation_traces import JUDGE_PROJECT
from pipeline.routing import route_trace
from pipeline.routing.router import route_backfill
from pipeline.rules import parse_rules
from scorers.testing import resolver

SCORERS = resolver()
RULES = parse_rules({"rules": [
    {"name": "everything", "scorer": "error_spans"},
    {"name": "llm-calls", "scorer": "error_spans", "filter": {"span_type": "llm"}},
    {"name": "bot-only", "scorer": "error_spans", "filter": {"project": "bot"}},
    {"name": "judge-health", "scorer": "error_spans", "filter": {"project": [JUDGE_PROJECT, "bot"]}},
]})


def trace(project: str) -> Trace:
    spans = [Span(trace_id="e1", span_id="root", name="evaluate r", span_type="evaluator", start_ns=0, end_ns=10,
                  project=project),
             Span(trace_id="e1", span_id="c1", parent_span_id="root", name="chat m", span_type="llm", start_ns=1,
                  end_ns=9, project=project)]
    return Trace(trace_id="e1", version=1, project=project, status="complete", close_reason="final_marker",
                 root_span_id="root", start_ns=0, end_ns=10, spans=spans)


def test_a_judge_trace_is_judged_only_by_rules_that_name_its_project() -> None:
    routed = route_trace(trace(JUDGE_PROJECT), RULES, SCORERS)
    assert [j.rule for j in routed.jobs] == ["judge-health"]
    assert [(d.rule, d.outcome) for d in routed.decisions] == [("judge-health", DecisionOutcome.QUEUED)]


def test_a_backfill_skips_judge_traces_too() -> None:
    routed = route_backfill(trace(JUDGE_PROJECT), RULES, ["everything", "judge-health"])
    assert [j.rule for j in routed.jobs] == ["judge-health"]


def test_other_traces_are_routed_as_before() -> None:
    routed = route_trace(trace("bot"), RULES, SCORERS)
    assert sorted(j.rule for j in routed.jobs) == ["bot-only", "everything", "judge-health", "llm-calls"]
    other = route_trace(trace("shop"), RULES, SCORERS)
    assert {d.rule: d.outcome for d in other.decisions}["judge-health"] == DecisionOutcome.FILTERED_OUT
