"""Pure alert logic. Window state is a plain dict kept in a Faust table keyed by alert rule name.

A count rule fires when `min_count` matching results fall within `window_s` (event time:
the results' scored_at), then starts a new window, so one burst is one alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.contracts import ScoreResult, ScoreStatus, Verdict
from pipeline.rules.model import AlertCondition, AlertRule

MAX_TRACE_IDS = 10


def matches(alert: AlertRule, result: ScoreResult) -> bool:
    if alert.rule is not None and alert.rule != result.rule:
        return False
    scored = result.status == ScoreStatus.SCORED
    failed = scored and result.passed is False
    errored = result.status == ScoreStatus.ERROR
    numeric = result.value if isinstance(result.value, int | float) and not isinstance(result.value, bool) else None
    condition = alert.condition
    if condition == AlertCondition.FAILED:
        return failed
    if condition == AlertCondition.ERROR:
        return errored
    if condition == AlertCondition.SCORE_BELOW:
        return scored and numeric is not None and numeric < alert.value  # type: ignore[operator]
    if condition == AlertCondition.SCORE_ABOVE:
        return scored and numeric is not None and numeric > alert.value  # type: ignore[operator]
    if condition == AlertCondition.VERDICT_FALSE:
        return scored and any(c.verdict == Verdict.FALSE for c in result.criteria)
    if condition == AlertCondition.CATEGORY_IN:
        return scored and isinstance(result.value, str) and result.value in (alert.categories or [])
    return failed or errored


def group_of(alert: AlertRule, result: ScoreResult) -> dict[str, str]:
    """The values of the alert's `group_by` fields for this result (empty: one group)."""
    fields = {"rule": result.rule, "scorer": result.scorer, "project": result.project,
              "agent": result.agent_name or "", "model": result.model or ""}
    return {name: fields[name] for name in alert.group_by}


def window_key(alert: AlertRule, group: dict[str, str]) -> str:
    """The alert-windows table key: the alert rule, plus its group when it has `group_by`."""
    return alert.name if not group else alert.name + "|" + "|".join(f"{k}={v}" for k, v in group.items())


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
