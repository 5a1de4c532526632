"""`evalstream traces list`: stored traces with filters, newest first. The SQL is built here (pure), its
conditions by `storage.filters`."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.contracts.evaluation_traces import JUDGE_PROJECT
from pipeline.storage.filters import Eq, Fixed, Has, InSelect, Range, quote, where

__all__ = ["FAILED", "TraceFilter"]

FAILED = "(passed = false OR status = 'error')"  # a current score that did not pass


@dataclass(frozen=True)
class TraceFilter:
    failed_rule: str | None = None  # a current score of this rule did not pass (or errored)
    agent: str | None = None
    project: str | None = None
    status: str | None = None  # complete / incomplete
    since: float | None = None  # closed at or after (epoch seconds)
    until: float | None = None  # closed before
    limit: int = 20

    def sql(self, db: str) -> str:
        failed = None
        if self.failed_rule:
            failed = InSelect("t.trace_id", f"SELECT trace_id FROM {db}.scores_current "
                                            f"WHERE {Eq('rule', self.failed_rule).sql()} AND {FAILED}")
        # The judges' own evaluation traces are listed only when their project is asked for by name.
        not_judges = None if self.project else Fixed(f"t.project != {quote(JUDGE_PROJECT)}")
        conditions = where(Range("t.closed_at", self.since, self.until), Has("t.agents", self.agent),
                           Eq("t.project", self.project), not_judges, Eq("t.status", self.status), failed)
        return (
            "SELECT t.trace_id AS trace_id, t.closed_at AS closed_at, t.project AS project, t.status AS status, "
            "t.span_count AS spans, t.error_count AS errors, round(t.duration_ms, 1) AS duration_ms, "
            "arrayStringConcat(t.agents, ', ') AS agents, "
            "arrayStringConcat(arraySort(f.failed), ', ') AS failed_rules "
            f"FROM {db}.traces_current AS t "
            f"LEFT JOIN (SELECT trace_id, groupArray(rule) AS failed FROM {db}.scores_current "
            f"WHERE {FAILED} GROUP BY trace_id) AS f ON f.trace_id = t.trace_id "
            + conditions
            + f"ORDER BY t.closed_at DESC LIMIT {int(self.limit)}"
        )
