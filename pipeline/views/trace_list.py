"""`evalstream traces list`: stored traces with filters, newest first. The SQL is built here (pure)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float) -> float:
    """`30m`, `24h`, `7d` (that long ago) or an ISO date / datetime (UTC unless it says otherwise)."""
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r}: use a duration like 30m, 24h, 7d, or an ISO date like 2026-11-20") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
        where = []
        if self.since is not None:
            where.append(f"t.closed_at >= toDateTime64({self.since:.6f}, 6)")
        if self.until is not None:
            where.append(f"t.closed_at < toDateTime64({self.until:.6f}, 6)")
        if self.agent:
            where.append(f"has(t.agents, {_quote(self.agent)})")
        if self.project:
            where.append(f"t.project = {_quote(self.project)}")
        if self.status:
            where.append(f"t.status = {_quote(self.status)}")
        if self.failed_rule:
            where.append(f"t.trace_id IN (SELECT trace_id FROM {db}.scores_current WHERE rule = "
                         f"{_quote(self.failed_rule)} AND (passed = false OR status = 'error'))")
        return (
            "SELECT t.trace_id AS trace_id, t.closed_at AS closed_at, t.project AS project, t.status AS status, "
            "t.span_count AS spans, t.error_count AS errors, round(t.duration_ms, 1) AS duration_ms, "
            "arrayStringConcat(t.agents, ', ') AS agents, "
            "arrayStringConcat(arraySort(f.failed), ', ') AS failed_rules "
            f"FROM {db}.traces_current AS t "
            f"LEFT JOIN (SELECT trace_id, groupArray(rule) AS failed FROM {db}.scores_current "
            "WHERE passed = false OR status = 'error' GROUP BY trace_id) AS f ON f.trace_id = t.trace_id "
            + (f"WHERE {' AND '.join(where)} " if where else "")
            + f"ORDER BY t.closed_at DESC LIMIT {int(self.limit)}"
        )
