"""Filter and sample a closed trace against every rule: a decision for each, a job for each sampled.

`async_evaluate` requests carried on spans become jobs too, under the rule name
`sdk:<scorer>`, sampled with the same function as server-side rules. Each request is its own subject
(decided per span and call), and passes the operator's trust boundary first (`evaluation_policy`).

A span rule (`subject: span`) makes each span of the trace that matches its filter a subject of its own:
a decision, a job and a score each with the span's id, sampled by (rule, trace id, span id). Its matched
spans beyond `max_spans_per_trace` (kept in start order) are sampled out, naming the cap; a trace with no
matching span gets one `filtered_out` decision for the rule, with no span id.

A backfill (`route_backfill`) evaluates only the rules it names, with the same filters and sampling,
and marks jobs and decisions `source=backfill`; their job ids differ from the live ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from pydantic import ValidationError

from pipeline.contracts import (
    Decision,
    DecisionOutcome,
    Example,
    JobSource,
    JobSubject,
    ScoreJob,
    Trace,
)
from pipeline.routing.evaluation_policy import EvaluationPolicy, Refused
from pipeline.routing.judge_traces import skips_judge_trace
from pipeline.rules.matching import filter_mismatch, matching_spans, no_span_reason, trace_level_mismatch
from pipeline.rules.model import EvalRule, RuleSet, RuleSubject
from pipeline.sampling import is_sampled, sdk_rule, span_key
from scorers.registry import ScorerResolver


@dataclass
class Routed:
    decisions: list[Decision] = field(default_factory=list)
    jobs: list[ScoreJob] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # the policy's code for each refused request


def route_trace(trace: Trace, ruleset: RuleSet, scorers: ScorerResolver, *, source: JobSource = JobSource.LIVE,
                only_rule: str | None = None, only_rules: Collection[str] | None = None,
                rules_version: str = "") -> Routed:
    """Every active rule, or only `only_rule` / `only_rules` (then no `async_evaluate` requests). `scorers`:
    the process's resolver, which the evaluation policy asks about the scorers spans name. `rules_version`:
    the version of `ruleset`, recorded on every decision and job."""
    chosen = {only_rule} if only_rule is not None else set(only_rules) if only_rules is not None else None
    out, decide, now = _route_rules(trace, ruleset, source, chosen, rules_version)
    if chosen is None:
        _route_evaluation_requests(trace, out, decide, EvaluationPolicy(ruleset.sdk_evaluations, scorers), source,
                                   now, rules_version)
    return out


def route_backfill(trace: Trace, ruleset: RuleSet, rules: Collection[str], *, rules_version: str = "") -> Routed:
    """A stored trace against the named rules only, as live. A name this worker has no active rule for
    gets a `failed` decision saying so, so a rules file that differs from the backfill's is visible."""
    routed, _, now = _route_rules(trace, ruleset, JobSource.BACKFILL, set(rules), rules_version)
    active = {r.name for r in ruleset.trace_and_span_rules}
    for name in dict.fromkeys(rules):
        if name not in active:
            routed.decisions.append(Decision(
                rule=name, trace_id=trace.trace_id, trace_version=trace.version, outcome=DecisionOutcome.FAILED,
                reason="backfill: this worker has no active rule of that name (its rules file differs)",
                project=trace.project, source=JobSource.BACKFILL, decided_at_ns=now, rules_version=rules_version,
            ))
    return routed


def _route_rules(trace: Trace, ruleset: RuleSet, source: JobSource, chosen: set[str] | None, rules_version: str
                 ) -> tuple[Routed, Callable[..., None], int]:
    """The rules' decisions and jobs (all active rules, or the `chosen`), the `decide` that records a
    decision, and the time they are stamped with."""
    now = time.time_ns()
    out = Routed()

    def decide(rule: str, outcome: DecisionOutcome, reason: str = "", job_id: str | None = None,
               span_id: str | None = None, request_index: int = 0) -> None:
        out.decisions.append(Decision(
            rule=rule, trace_id=trace.trace_id, trace_version=trace.version, span_id=span_id,
            request_index=request_index, outcome=outcome, reason=reason, job_id=job_id, project=trace.project,
            source=source, decided_at_ns=now, rules_version=rules_version,
        ))

    for rule in ruleset.trace_and_span_rules:
        if chosen is not None and rule.name not in chosen:
            continue
        if skips_judge_trace(rule.filter, trace):
            continue  # a judge's own evaluation trace: no job and no decision (routing/judge_traces.py)
        if rule.subject == RuleSubject.SPAN:
            _route_span_rule(trace, rule, out, decide, source, now, rules_version)
            continue
        mismatch = filter_mismatch(rule.filter, trace)
        if mismatch is not None:
            decide(rule.name, DecisionOutcome.FILTERED_OUT, mismatch)
            continue
        if not is_sampled(trace.trace_id, rule.name, rule.sampling_rate):
            decide(rule.name, DecisionOutcome.SAMPLED_OUT, f"sampling_rate={rule.sampling_rate:g}")
            continue
        job_id = ScoreJob.make_id(rule.name, trace.trace_id, trace.version, source=source)
        out.jobs.append(ScoreJob(
            job_id=job_id, rule=rule.name, scorer=rule.scorer, params=rule.params, threshold=rule.threshold,
            trace_id=trace.trace_id, trace_version=trace.version, source=source, created_ns=now,
            rules_version=rules_version,
        ))
        decide(rule.name, DecisionOutcome.QUEUED, job_id=job_id)
    return out, decide, now


def _route_span_rule(trace: Trace, rule: EvalRule, out: Routed, decide: Callable[..., None], source: JobSource,
                     now: int, rules_version: str) -> None:
    """Each matching span is a subject: its own decision and job. No match: one trace-level decision."""
    mismatch = trace_level_mismatch(rule.filter, trace)
    spans = matching_spans(rule.filter, trace) if mismatch is None else []
    if mismatch is not None or not spans:
        decide(rule.name, DecisionOutcome.FILTERED_OUT, mismatch or no_span_reason(rule.filter, trace))
        return
    cap, queued = rule.span_cap, 0
    for span in spans:
        if not is_sampled(span_key(trace.trace_id, span.span_id), rule.name, rule.sampling_rate):
            decide(rule.name, DecisionOutcome.SAMPLED_OUT, f"sampling_rate={rule.sampling_rate:g}",
                   span_id=span.span_id)
            continue
        if queued >= cap:
            decide(rule.name, DecisionOutcome.SAMPLED_OUT,
                   f"over max_spans_per_trace={cap}: {len(spans)} spans matched, the first {cap} sampled are "
                   "scored (in start order)", span_id=span.span_id)
            continue
        job_id = ScoreJob.make_id(rule.name, trace.trace_id, trace.version, span.span_id, source=source)
        out.jobs.append(ScoreJob(
            job_id=job_id, rule=rule.name, scorer=rule.scorer, params=rule.params, threshold=rule.threshold,
            trace_id=trace.trace_id, trace_version=trace.version, span_id=span.span_id, subject=JobSubject.SPAN,
            source=source, created_ns=now, rules_version=rules_version,
        ))
        queued += 1
        decide(rule.name, DecisionOutcome.QUEUED, job_id=job_id, span_id=span.span_id)


def _route_evaluation_requests(trace: Trace, out: Routed, decide, policy: EvaluationPolicy, source: JobSource,
                               now: int, rules_version: str) -> None:
    limit = policy.config.max_per_trace
    queued = 0
    for span in trace.spans:
        for index, request in enumerate(span.evaluations):
            rule = sdk_rule(request.scorer)

            def decided(outcome: DecisionOutcome, reason: str = "", job_id: str | None = None) -> None:
                decide(rule, outcome, reason, job_id, span_id=span.span_id, request_index=index)  # noqa: B023

            admitted = policy.admit(request)
            if isinstance(admitted, Refused):
                out.refused.append(admitted.code)
                decided(DecisionOutcome.FAILED, f"refused: {admitted.reason}"[:1000])
                continue
            if not is_sampled(trace.trace_id, rule, request.sampling_rate):
                decided(DecisionOutcome.SAMPLED_OUT, f"sampling_rate={request.sampling_rate:g}")
                continue
            if queued >= limit:
                decided(DecisionOutcome.SAMPLED_OUT, f"over sdk_evaluations.max_per_trace={limit} requests")
                continue
            job_id = ScoreJob.make_id(rule, trace.trace_id, trace.version, span.span_id, source=source,
                                      request_index=index)
            try:
                example = Example.model_validate(request.example or {})
            except ValidationError as exc:
                decided(DecisionOutcome.FAILED, f"invalid example: {exc.errors()[0]['msg']}", job_id)
                continue
            out.jobs.append(ScoreJob(
                job_id=job_id, rule=rule, scorer=admitted.scorer, params=admitted.params,
                threshold=request.threshold, trace_id=trace.trace_id, trace_version=trace.version,
                span_id=span.span_id, request_index=index, example=example, source=source, created_ns=now,
                rules_version=rules_version,
            ))
            queued += 1
            decided(DecisionOutcome.QUEUED, job_id=job_id)
