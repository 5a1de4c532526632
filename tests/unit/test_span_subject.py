"""Span rules' scorers: SpanSubject (pipeline/contracts/subjects.py), `Scorer.subjects`, the runner building
the subject for a span job, built-ins and judges scoring a span, the rules check refusing trace-only scorers,
and the sandbox protocol carrying a span to an uploaded scorer (or refusing it clearly)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.contracts import (
    ErrorInfo,
    JobSubject,
    ScoreJob,
    ScoreStatus,
    Span,
    SpanStatus,
    SpanSubject,
    Trace,
)
from pipeline.errors import RulesError, ScorerSubjectError
from pipeline.rules import parse_rules
from pipeline.scoring.runner import RetryPolicy, ScorerCache, run_job
from pipeline.scoring.sandbox import protocol
from pipeline.scoring.sandbox.child import check_subject
from scorers import Score, Scorer, scorer
from scorers.builtin import JsonOutput, PiiLeak
from scorers.judges import JUDGES, PRESETS
from scorers.judges.prompts import default_evidence, field_text, view_of
from scorers.testing import ScriptedJudgeClient, resolver


def make_trace() -> Trace:
    spans = [
        Span(trace_id="t1", span_id="root", name="handle", start_ns=0, end_ns=10**9, inputs="plan my trip",
             outputs="done", project="bot"),
        Span(trace_id="t1", span_id="llm-1", parent_span_id="root", name="extract", span_type="llm", start_ns=1,
             end_ns=5 * 10**8, inputs={"prompt": "give JSON"}, outputs='{"city": "Oslo"}', model="gpt-4o",
             agent_name="planner", input_tokens=12, output_tokens=7, cost_usd=0.002, attributes={"step": 1},
             project="bot"),
        Span(trace_id="t1", span_id="llm-2", parent_span_id="root", name="extract", span_type="llm",
             start_ns=6 * 10**8, end_ns=9 * 10**8, outputs="not json, mail me at ann@example.com",
             status=SpanStatus.ERROR, error=ErrorInfo(type="ValueError", message="bad"), project="bot"),
    ]
    return Trace(trace_id="t1", version=1, project="bot", status="complete", close_reason="quiet_period",
                 root_span_id="root", start_ns=0, end_ns=10**9, spans=spans)


def test_span_subject_reads_its_span_and_keeps_the_trace() -> None:
    trace = make_trace()
    subject = SpanSubject.of(trace, "llm-1")
    assert subject.trace is trace and subject.span_id == "llm-1" and subject.trace_id == "t1"
    assert (subject.name, subject.span_type, subject.model, subject.agent) == ("extract", "llm", "gpt-4o", "planner")
    assert subject.inputs == {"prompt": "give JSON"} and subject.outputs == '{"city": "Oslo"}'
    assert subject.attributes == {"step": 1} and subject.cost == 0.002
    assert subject.tokens == {"input": 12, "output": 7, "total": 19}
    assert subject.error is None and not subject.has_error and subject.parent is trace.root
    other = SpanSubject.of(trace, "llm-2")
    assert other.has_error and other.error.type == "ValueError" and other.tokens["total"] is None
    with pytest.raises(KeyError, match="nope"):
        SpanSubject.of(trace, "nope")
    with pytest.raises(AttributeError):
        subject.span = trace.spans[0]  # type: ignore[misc]


async def test_json_output_and_pii_leak_score_the_spans_own_output() -> None:
    trace = make_trace()
    assert JsonOutput.subjects == PiiLeak.subjects == frozenset({"trace", "span"})
    assert (await JsonOutput().run(SpanSubject.of(trace, "llm-1"))).passed is True
    assert (await JsonOutput().run(SpanSubject.of(trace, "llm-2"))).passed is False
    assert (await JsonOutput().run(trace)).passed is False  # the trace's output is the root's: "done"
    leak = await PiiLeak(scope="all_spans").run(SpanSubject.of(trace, "llm-2"))
    assert leak.value == 1 and "email" in leak.reason
    assert (await PiiLeak().run(SpanSubject.of(trace, "llm-1"))).value == 0


def test_scorers_declare_subjects() -> None:
    assert Scorer.subjects == frozenset({"trace"})

    @scorer(subjects=["trace", "span"])
    def spanwise(target: Any) -> bool:
        return True

    @scorer()
    def tracewise(target: Any) -> bool:
        return True

    assert spanwise.subjects == frozenset({"trace", "span"}) and tracewise.subjects == frozenset({"trace"})
    with pytest.raises(ValueError, match="subjects"):
        scorer(subjects=["spans"])(lambda t: True)
    for name in ("llm_criteria", "llm_scale", "llm_label", "agent_judge", *PRESETS):
        assert "span" in JUDGES[name].subjects, name
    assert JUDGES["session_criteria"].subjects == JUDGES["session_agent_judge"].subjects == frozenset({"session"})


def test_a_span_rule_naming_a_trace_only_scorer_fails_when_the_rules_load() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules({"rules": [{"name": "slow-spans", "scorer": "trace_latency", "subject": "span",
                                "params": {"max_ms": 100}}]}, scorers=resolver())
    message = str(info.value)
    assert "rule 'slow-spans'" in message and "'trace_latency'" in message and "scores only trace" in message
    assert info.value.rule == "slow-spans" and info.value.field == "scorer"
    parse_rules({"rules": [{"name": "ok", "scorer": "json_output", "subject": "span"},
                           {"name": "judge", "scorer": "helpfulness", "subject": "span"},
                           {"name": "trace", "scorer": "trace_latency", "params": {"max_ms": 100}}]},
                scorers=resolver())


async def test_the_runner_gives_a_span_job_its_span_and_names_it_on_the_result() -> None:
    trace = make_trace()
    cache = ScorerCache(resolver())
    job = ScoreJob(job_id="j", rule="r", scorer="json_output", trace_id="t1", trace_version=1, span_id="llm-2",
                   subject=JobSubject.SPAN)
    result = (await run_job(job, trace, cache, RetryPolicy())).result
    assert result.status == ScoreStatus.SCORED and result.passed is False
    assert (result.span_id, result.span_name) == ("llm-2", "extract")
    missing = job.model_copy(update={"span_id": "gone"})
    outcome = await run_job(missing, trace, cache, RetryPolicy())
    assert outcome.result.status == ScoreStatus.ERROR and "gone" in (outcome.result.error_message or "")
    assert not outcome.dead_letter
    trace_job = job.model_copy(update={"subject": JobSubject.TRACE, "span_id": None})
    assert (await run_job(trace_job, trace, cache, RetryPolicy())).result.span_name is None


def test_a_job_without_subject_reads_as_a_trace_job() -> None:
    job = ScoreJob.model_validate({"job_id": "j", "rule": "r", "scorer": "s", "trace_id": "t", "trace_version": 1})
    assert job.subject == JobSubject.TRACE


def test_a_judge_is_shown_the_span_with_its_trace_as_bounded_context() -> None:
    trace = make_trace()
    big = trace.model_copy(update={"spans": [*trace.spans, *[
        Span(trace_id="t1", span_id=f"x{i}", parent_span_id="root", name=f"tool-{i}", span_type="tool",
             start_ns=i, end_ns=i + 1, outputs="y" * 5000) for i in range(2000)]]})
    view = view_of(SpanSubject.of(big, "llm-1"))
    assert view.inputs == {"prompt": "give JSON"} and view.span.span_id == "llm-1"
    text = default_evidence(view)
    assert text.index("<span>") < text.index("<inputs>") < text.index("<trace_context>")
    assert "model=gpt-4o" in text and '"step"' in text and "The span judged is [llm-1] extract" in text
    assert "y" * 100 not in text and len(text) < 12_000  # a summary, not the trace's payloads
    assert "[llm-1] extract" in (field_text(view, "span") or "")
    assert field_text(view_of(trace), "span") == "(no span: the whole trace or example is judged)"


async def test_an_llm_judge_scores_a_span() -> None:
    client = ScriptedJudgeClient()
    judge = resolver(client).build("llm_criteria", {"criteria": ["The output is JSON"]})
    client.reply(tool_calls=[("submit_verdicts", json.dumps({
        "criteria": {"c1": {"reason": "it is", "verdict": "true"}}, "summary": "ok"}))])
    score = await judge.run(SpanSubject.of(make_trace(), "llm-1"))
    assert score.passed is True
    user = client.requests[0].messages[1]["content"]
    assert '{"city": "Oslo"}' in user and "<trace_context>" in user and "plan my trip" not in user


async def test_the_agent_judge_is_pointed_at_the_span() -> None:
    client = ScriptedJudgeClient()
    judge = resolver(client).build("agent_judge", {"instructions": "Did this step help? {trace}",
                                                   "labels": ["yes", "no"], "passing": ["yes"]})
    client.reply(tool_calls=[("submit_label", json.dumps({"label": "yes", "reason": "fine"}))])
    score = await judge.run(SpanSubject.of(make_trace(), "llm-2"))
    assert score.passed is True
    user = client.requests[0].messages[1]["content"]
    assert user.startswith("<span_under_evaluation>\n[llm-2] extract") and "ERROR ValueError" in user
    assert "plan my trip" in user  # the whole (small) trace follows, inline, for context


def test_the_sandbox_carries_a_span_and_refuses_it_to_a_trace_only_upload() -> None:
    subject = SpanSubject.of(make_trace(), "llm-1")
    message = protocol.loads(protocol.score_request(3, {}, subject))
    decoded = protocol.decode_target(message["target"])
    assert isinstance(decoded, SpanSubject) and decoded.span_id == "llm-1" and decoded.trace == subject.trace

    class TraceOnly(Scorer):
        name = "trace_only"

        def score(self, target: Any) -> Score:
            return Score(value=1)

    class Both(TraceOnly):
        subjects = frozenset({"trace", "span"})

    with pytest.raises(ScorerSubjectError, match="'trace_only' scores only trace.*span llm-1"):
        check_subject(TraceOnly, decoded)
    check_subject(Both, decoded)
    check_subject(TraceOnly, subject.trace)
