"""Pure alert logic. Window state is a plain dict kept in a Faust table keyed by alert rule name.

A count rule fires when `min_count` matching results fall within `window_s` (event time:
the results' scored_at), then starts a new window, so one burst is one alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.contracts import ScoreResult, ScoreStatus
from pipeline.rules.model import AlertCondition, AlertRule

MAX_TRACE_IDS = 10


def matches(alert: AlertRule, result: ScoreResult) -> bool:
    if alert.rule is not None and alert.rule != result.rule:
        return False
    failed = result.status == ScoreStatus.SCORED and result.passed is False
    errored = result.status == ScoreStatus.ERROR
    if alert.condition == AlertCondition.FAILED:
        return failed
    if alert.condition == AlertCondition.ERROR:
        return errored
    return failed or errored


@dataclass(frozen=True)
class Firing:
    failures: int
    trace_ids: list[str]
    reasons: list[str]


def record(state: dict[str, Any] | None, alert: AlertRule, result: ScoreResult) -> tuple[dict[str, Any], Firing | None]:
    """Add one matching result to the window; returns the new state and a Firing when it fires."""
    now = result.scored_at_ns / 1e9
    events = [e for e in (state or {}).get("events", []) if e[0] > now - alert.window_s]
    events.append([now, result.trace_id, result.reason[:300]])
    if len(events) >= alert.min_count:
        return {"events": []}, Firing(
            failures=len(events),
            trace_ids=[e[1] for e in events][-MAX_TRACE_IDS:],
            reasons=[e[2] for e in events][-MAX_TRACE_IDS:],
        )
    return {"events": events}, None
