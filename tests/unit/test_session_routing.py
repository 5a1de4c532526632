"""pipeline/routing/sessions.py: which session rules judge a closed session, and which judge each turn."""

from __future__ import annotations

import pytest
import yaml

from pipeline.contracts import DecisionOutcome, Session, SessionCloseReason, SessionStatus, Turn
from pipeline.errors import RulesError
from pipeline.routing import route_session
from pipeline.rules import RuleSet, parse_rules
from pipeline.sampling import is_sampled

RULES = RuleSet.model_validate(yaml.safe_load("""
rules:
  - {name: trace-rule, scorer: error_spans}
  - {name: final-only, subject: session, scorer: session_errors}
  - {name: each-turn, subject: session, scorer: session_errors, each_turn: true}
  - {name: bot-only, subject: session, scorer: session_errors, filter: {project: bot}, each_turn: true}
  - {name: complete-only, subject: session, scorer: session_errors, filter: {status: complete}, each_turn: true}
  - {name: half, subject: session, scorer: session_errors, sampling_rate: 0.5}
"""))


def session(session_id: str = "s1", *, turns: int = 3, project: str = "shop", status: SessionStatus =
            SessionStatus.COMPLETE, finished: list[str] | None = None) -> Session:
    return Session(
        session_id=session_id, version=2, project=project, status=status,
        close_reason=None if status == SessionStatus.OPEN else SessionCloseReason.IDLE,
        turns=[Turn(session_id=session_id, trace_id=f"t{i}", project=project) for i in range(1, turns + 1)],
        finished_rules=finished or [],
    )


def test_a_closed_session_gets_a_decision_per_session_rule_and_a_final_job_per_match() -> None:
    routed = route_session(session(), RULES)
    outcomes = {d.rule: d.outcome for d in routed.decisions}
    half = DecisionOutcome.QUEUED if is_sampled("s1", "half", 0.5) else DecisionOutcome.SAMPLED_OUT
    assert outcomes == {"final-only": DecisionOutcome.QUEUED, "each-turn": DecisionOutcome.QUEUED,
                        "bot-only": DecisionOutcome.FILTERED_OUT, "complete-only": DecisionOutcome.QUEUED,
                        "half": half}  # trace rules are not session rules
    assert all(j.final and j.turn == 3 and j.session_version == 2 for j in routed.jobs)
    queued = {d.rule: d.job_id for d in routed.decisions if d.outcome == DecisionOutcome.QUEUED}
    assert {j.rule: j.job_id for j in routed.jobs} == queued


def test_an_open_snapshot_is_judged_only_by_each_turn_rules_still_undecided_and_leaves_no_decisions() -> None:
    routed = route_session(session(status=SessionStatus.OPEN, finished=["each-turn"]), RULES)
    assert routed.decisions == []
    # each-turn is done with this version; bot-only does not match; the status filter waits for the close
    assert [(j.rule, j.final, j.turn) for j in routed.jobs] == [("complete-only", False, 3)]


def test_job_ids_are_stable_per_look_and_differ_between_looks() -> None:
    after_3 = route_session(session(status=SessionStatus.OPEN), RULES).jobs
    again = route_session(session(status=SessionStatus.OPEN), RULES).jobs
    after_4 = route_session(session(status=SessionStatus.OPEN, turns=4), RULES).jobs
    closed = route_session(session(), RULES).jobs
    assert [j.job_id for j in after_3] == [j.job_id for j in again]  # a redelivered snapshot: same rows
    ids = {j.job_id for j in after_3} | {j.job_id for j in after_4} | {j.job_id for j in closed}
    assert len(ids) == len(after_3) + len(after_4) + len(closed)


def test_session_rules_reject_span_filters_and_each_turn_on_trace_rules() -> None:
    with pytest.raises(RulesError, match="not on span_name"):
        parse_rules(yaml.safe_load("rules: [{name: x, subject: session, scorer: error_spans, "
                                   "filter: {span_name: 'a*'}}]"))
    with pytest.raises(RulesError, match="each_turn applies to session rules"):
        parse_rules(yaml.safe_load("rules: [{name: x, scorer: error_spans, each_turn: true}]"))


def test_a_sessions_decisions_jobs_and_verdict_decisions_carry_the_rules_version() -> None:
    from pipeline.contracts import ScoreResult, ScoreStatus, result_decision
    from pipeline.storage.rows import SESSION_DECISION_COLUMNS, session_decision_row

    routed = route_session(session(), RULES, rules_version="a1b2c3d4e5f6")
    assert routed.decisions and {d.rules_version for d in routed.decisions} == {"a1b2c3d4e5f6"}
    assert routed.jobs and {j.rules_version for j in routed.jobs} == {"a1b2c3d4e5f6"}
    row = dict(zip(SESSION_DECISION_COLUMNS, session_decision_row(routed.decisions[0]), strict=True))
    assert row["rules_version"] == "a1b2c3d4e5f6"
    job = routed.jobs[0]
    verdict = ScoreResult(job_id=job.job_id, rule=job.rule, scorer=job.scorer, trace_id="t", trace_version=1,
                          status=ScoreStatus.SCORED, session_id=job.session_id, session_version=job.session_version,
                          turn=job.turn, final=True, rules_version=job.rules_version)
    decided = result_decision(verdict)
    assert decided is not None and decided.rules_version == "a1b2c3d4e5f6"
