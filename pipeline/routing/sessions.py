"""Filter and sample a session version against the session rules. Pure.

A closed session gets a decision for every session rule and a closing job (`final`) for each one it
passes. An open snapshot (taken after a new turn) gets a job for each rule with `each_turn` that it
passes and that has not reached its verdict yet; it records no decisions (those are for verdicts
on versions), its scores are the record. Sampling is by session id, so every turn and the close of
one conversation are sampled alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipeline.contracts import DecisionOutcome, Session, SessionDecision, SessionJob
from pipeline.rules.matching import session_filter_mismatch
from pipeline.rules.model import RuleSet
from pipeline.sampling import is_sampled


@dataclass
class RoutedSession:
    decisions: list[SessionDecision] = field(default_factory=list)
    jobs: list[SessionJob] = field(default_factory=list)


def route_session(session: Session, ruleset: RuleSet, *, rules_version: str = "") -> RoutedSession:
    """`rules_version`: the version of `ruleset`, recorded on each decision and job."""
    now = time.time_ns()
    out = RoutedSession()
    final = not session.is_open
    turn = len(session.turns)

    def decide(rule: str, outcome: DecisionOutcome, reason: str = "", job_id: str | None = None) -> None:
        if final:
            out.decisions.append(SessionDecision(
                rule=rule, session_id=session.session_id, session_version=session.version, outcome=outcome,
                reason=reason, job_id=job_id, project=session.project, turns=turn, decided_at_ns=now,
                rules_version=rules_version,
            ))

    for rule in ruleset.session_rules:
        if not final and (not rule.each_turn or rule.name in session.finished_rules):
            continue
        mismatch = session_filter_mismatch(rule.filter, session)
        if mismatch is not None:
            decide(rule.name, DecisionOutcome.FILTERED_OUT, mismatch)
            continue
        if not is_sampled(session.session_id, rule.name, rule.sampling_rate):
            decide(rule.name, DecisionOutcome.SAMPLED_OUT, f"sampling_rate={rule.sampling_rate:g}")
            continue
        job_id = SessionJob.make_id(rule.name, session.session_id, session.version, turn, final)
        out.jobs.append(SessionJob(
            job_id=job_id, rule=rule.name, scorer=rule.scorer, params=rule.params, threshold=rule.threshold,
            session_id=session.session_id, session_version=session.version, turn=turn, final=final,
            created_ns=now, rules_version=rules_version,
        ))
        decide(rule.name, DecisionOutcome.QUEUED, job_id=job_id)
    return out
