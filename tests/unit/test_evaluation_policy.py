"""pipeline/routing/evaluation_policy.py: a span's async_evaluate request never chooses code, endpoints or keys."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.contracts import DecisionOutcome, EvaluationRequest, ScoreJob, Span, Trace
from pipeline.errors import RulesError
from pipeline.routing import route_trace
from pipeline.routing.evaluation_policy import Admitted, EvaluationPolicy, Refused
from pipeline.rules import parse_rules
from pipeline.scoring.runner import ScorerCache
from scorers.testing import resolver

SCORERS = resolver()  # built-ins, entry points and dotted paths; no uploads
LISTED = parse_rules({"sdk_evaluations": {"scorers": [
    {"name": "helpfulness", "params": {"model": "openai/judge", "api_base": "http://judge.internal/v1",
                                       "api_key_env": "JUDGE_KEY"}},
    {"name": "tone", "scorer": "llm_scale", "params": {"question": "how polite"}, "allow_model_override": True},
    {"name": "latency-from-module", "scorer": "scorers.builtin.latency:TraceLatency"},
]}})


def admit(scorer: str, params: dict[str, Any] | None = None, ruleset=LISTED) -> Admitted | Refused:
    return EvaluationPolicy(ruleset.sdk_evaluations, SCORERS).admit(EvaluationRequest(scorer=scorer, params=params or {}))


@pytest.mark.parametrize("params", [
    {"api_base": "http://attacker.example/v1", "api_key_env": "EVALSTREAM_SLACK_BOT_TOKEN"},
    {"api_key": "sk-stolen"},
    {"litellm_params": {"base_url": "http://attacker.example"}},
    {"model": "openai/expensive"},
    {"max_tokens": 100000},
    {"requests_per_minute": 0.001},
])
def test_an_unlisted_judge_is_refused_whatever_params_it_brings(params: dict[str, Any]) -> None:
    got = admit("llm_scale", {"question": "q", **params})
    assert isinstance(got, Refused) and got.code == "judge_not_listed"
    assert "sdk_evaluations.scorers" in got.reason


@pytest.mark.parametrize("param", ["api_base", "api_key", "api_key_env", "litellm_params", "timeout_s",
                                   "tokens_per_minute", "temperature"])
def test_a_listed_judge_refuses_provider_params_from_the_span(param: str) -> None:
    got = admit("tone", {param: "x"})
    assert isinstance(got, Refused) and got.code == "operator_param" and param in got.reason


def test_a_listed_judge_runs_with_the_operators_provider_settings() -> None:
    got = admit("helpfulness", {"guidelines": ["short answers are fine"]})
    assert got == Admitted("helpfulness", {"guidelines": ["short answers are fine"], "model": "openai/judge",
                                           "api_base": "http://judge.internal/v1", "api_key_env": "JUDGE_KEY"})


def test_a_param_the_operator_fixed_cannot_be_changed_by_a_span() -> None:
    got = admit("helpfulness", {"model": "openai/other"})
    assert isinstance(got, Refused) and got.code == "fixed_param" and "model" in got.reason


def test_model_override_only_where_the_operator_allows_it() -> None:
    assert admit("tone", {"model": "openai/small"}) == Admitted("llm_scale", {"model": "openai/small",
                                                                              "question": "how polite"})


def test_a_dotted_name_from_a_span_is_refused_unless_listed() -> None:
    got = admit("os:system")
    assert isinstance(got, Refused) and got.code == "dotted_name"
    assert admit("latency-from-module", {"max_ms": 10}) == Admitted("scorers.builtin.latency:TraceLatency",
                                                                    {"max_ms": 10})


def test_code_scorer_params_are_validated_and_unknown_keys_refused() -> None:
    assert admit("trace_latency", {"max_ms": 250}) == Admitted("trace_latency", {"max_ms": 250})
    unknown = admit("trace_latency", {"max_ms": 250, "api_base": "http://x"})
    assert isinstance(unknown, Refused) and unknown.code == "invalid_params" and "api_base" in unknown.reason
    wrong = admit("trace_latency", {"max_ms": "soon"})
    assert isinstance(wrong, Refused) and wrong.code == "invalid_params" and "max_ms" in wrong.reason


def test_the_operator_can_turn_each_kind_off() -> None:
    closed = parse_rules({"sdk_evaluations": {"code_scorers": False, "uploaded_scorers": False}})
    assert admit("error_spans", ruleset=closed).code == "not_allowed"
    assert admit("my-uploaded-scorer", ruleset=closed).code == "not_allowed"
    assert admit("my-uploaded-scorer") == Admitted("my-uploaded-scorer", {})
    off = parse_rules({"sdk_evaluations": {"enabled": False}})
    assert admit("error_spans", ruleset=off).code == "disabled"


def test_the_rules_file_is_checked_for_listed_scorers() -> None:
    with pytest.raises(RulesError, match="no params api_bse"):
        parse_rules({"sdk_evaluations": {"scorers": [{"name": "helpfulness", "params": {"api_bse": "x"}}]}},
                    scorers=SCORERS)
    with pytest.raises(RulesError, match="nope"):
        parse_rules({"sdk_evaluations": {"scorers": [{"name": "x", "scorer": "nope:Nope"}]}}, scorers=SCORERS)
    with pytest.raises(RulesError, match="more than once"):
        parse_rules({"sdk_evaluations": {"scorers": [{"name": "helpfulness"}, {"name": "helpfulness"}]}})


def trace_with(*requests: EvaluationRequest, spans: int = 1) -> Trace:
    tid = "t" * 32
    root = Span(trace_id=tid, span_id="root", name="root", start_ns=0, end_ns=10)
    children = [Span(trace_id=tid, span_id=f"s{i}", parent_span_id="root", name="step", start_ns=1, end_ns=2,
                     evaluations=list(requests)) for i in range(spans)]
    return Trace(trace_id=tid, version=1, status="complete", close_reason="final_marker", root_span_id="root",
                 start_ns=0, end_ns=10, spans=[root, *children])


def test_a_refused_request_is_a_failed_decision_naming_why_and_the_rules_still_run() -> None:
    rules = parse_rules({"rules": [{"name": "errors", "scorer": "error_spans"}]})
    evil = EvaluationRequest(scorer="llm_scale", example={}, params={"question": "q", "api_base": "http://evil"})
    routed = route_trace(trace_with(evil), rules, SCORERS)
    assert [j.rule for j in routed.jobs] == ["errors"]
    (refused,) = [d for d in routed.decisions if d.rule == "sdk:llm_scale"]
    assert refused.outcome == DecisionOutcome.FAILED and refused.reason.startswith("refused: judge 'llm_scale'")
    assert refused.span_id == "s0" and routed.refused == ["judge_not_listed"]


def test_two_requests_on_one_span_are_two_jobs_and_two_decisions() -> None:
    one = EvaluationRequest(scorer="trace_latency", example={"inputs": 1}, params={"max_ms": 1})
    two = EvaluationRequest(scorer="trace_latency", example={"inputs": 2}, params={"max_ms": 1})
    routed = route_trace(trace_with(one, two), parse_rules({}), SCORERS)
    assert [(j.span_id, j.request_index) for j in routed.jobs] == [("s0", 0), ("s0", 1)]
    assert len({j.job_id for j in routed.jobs}) == 2
    assert routed.jobs[0].job_id == ScoreJob.make_id("sdk:trace_latency", "t" * 32, 1, "s0")  # ids of before stay
    assert [(d.span_id, d.request_index, d.outcome) for d in routed.decisions] == [
        ("s0", 0, DecisionOutcome.QUEUED), ("s0", 1, DecisionOutcome.QUEUED)]


def test_requests_past_the_cap_per_trace_are_sampled_out_with_the_reason() -> None:
    capped = parse_rules({"sdk_evaluations": {"max_per_trace": 3}})
    request = EvaluationRequest(scorer="error_spans", example={})
    routed = route_trace(trace_with(request, spans=5), capped, SCORERS)
    assert len(routed.jobs) == 3
    over = [d for d in routed.decisions if d.outcome == DecisionOutcome.SAMPLED_OUT]
    assert len(over) == 2 and "max_per_trace=3" in over[0].reason


def test_the_scorer_cache_keeps_only_its_bound() -> None:
    cache = ScorerCache(SCORERS, max_entries=50)
    for i in range(10_000):
        cache.get("trace_latency", {"max_ms": i + 1})
    assert len(cache) == 50
    newest = cache.get("trace_latency", {"max_ms": 10_000})
    assert newest is cache.get("trace_latency", {"max_ms": 10_000})


def test_span_chosen_scorer_names_do_not_become_metric_labels() -> None:
    from pipeline.worker.scorer import metric_rule

    assert metric_rule("tool-errors") == "tool-errors"
    assert {metric_rule(f"sdk:random-{i}") for i in range(1000)} == {"sdk:*"}


def test_a_listed_judges_budget_is_found_under_its_sdk_rule_name() -> None:
    rules = parse_rules({"rules": [{"name": "helpful", "scorer": "helpfulness", "budget": {"tokens_per_hour": 5}}],
                         "sdk_evaluations": {"scorers": [
                             {"name": "tone", "scorer": "llm_scale", "params": {"question": "how polite"},
                              "budget": {"cost_usd_per_hour": 2}},
                             {"name": "free", "scorer": "llm_scale", "params": {"question": "q"}}]}})
    assert rules.budget_of("sdk:tone").cost_usd_per_hour == 2  # type: ignore[union-attr]
    assert rules.budget_of("helpful").tokens_per_hour == 5  # type: ignore[union-attr]
    assert rules.budget_of("sdk:free") is None and rules.budget_of("sdk:unlisted") is None
    assert rules.budget_of("tone") is None  # a rule's name space and the sdk's do not mix
    with pytest.raises(RulesError, match="tokens_per_hour"):
        parse_rules({"sdk_evaluations": {"scorers": [{"name": "x", "scorer": "llm_scale", "budget": {}}]}})
