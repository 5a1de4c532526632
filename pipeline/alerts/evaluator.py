"""Which score results an alert rule watches, which of them match its condition, and their group.
The windows and incidents built from them are in `pipeline.alerts.incidents`."""

from __future__ import annotations

from pipeline.contracts import AlertObservation, ScoreResult, ScoreStatus, Verdict
from pipeline.rules.model import AlertCondition, AlertRule


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
              "agent": result.agent_name or "", "model": result.model or "", "span_name": result.span_name or ""}
    return {name: fields[name] for name in alert.group_by}


def group_key(alert_name: str, group: dict[str, str]) -> str:
    """The alert-incidents table key: the alert rule, plus its group when it has `group_by`."""
    return alert_name if not group else alert_name + "|" + "|".join(f"{k}={v}" for k, v in group.items())


def applies(alert: AlertRule, result: ScoreResult) -> bool:
    """The alert watches this result's rule (a rate needs every such result, matched or not). A look at
    a running session that reached no verdict yet ("continue") is not a result to count, and neither is
    a look that errored: it does not finish the rule, so it would come again after every turn; the
    closing verdict reports the error once."""
    if result.is_session and not result.final and (result.passed is None or result.status != ScoreStatus.SCORED):
        return False
    return alert.rule is None or alert.rule == result.rule


def observation(alert: AlertRule, result: ScoreResult, matched: bool) -> AlertObservation:
    value = result.value if isinstance(result.value, int | float | str | bool) else None
    reason = result.reason if result.status == ScoreStatus.SCORED else f"{result.error_type}: {result.reason}"
    if result.is_session:  # the trace is the turn the verdict came after; say which conversation it is
        when = "at its close" if result.final else f"after turn {result.turn}, still running"
        reason = f"session {result.session_id} v{result.session_version} {when}: {reason}"
    return AlertObservation(
        trace_id=result.trace_id, job_id=result.job_id, rule=result.rule, scorer=result.scorer,
        project=result.project, scored_at_ns=result.scored_at_ns, matched=matched,
        group=group_of(alert, result), value=value, threshold=result.threshold, reason=reason[:300],
    )
