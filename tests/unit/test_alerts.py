"""pipeline/alerts/evaluator.py: which results match an alert rule."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.alerts.evaluator import matches
from pipeline.contracts import ScoreResult
from pipeline.rules import AlertRule

S = 1_000_000_000
T0 = 1_700_000_000 * S  # event time, in ns


def result(trace_id: str = "t", *, at_ns: int = T0, status: str = "scored", passed: bool | None = False,
           rule: str = "slow", reason: str = "too slow") -> ScoreResult:
    return ScoreResult(job_id=f"j-{trace_id}", rule=rule, scorer="trace_latency", trace_id=trace_id,
                       trace_version=1, status=status, passed=passed, reason=reason, scored_at_ns=at_ns)


def alert(**kw: Any) -> AlertRule:
    return AlertRule(name=kw.pop("name", "a"), **kw)


# -- matches ----------------------------------------------------------------------------------------

FAILED = result(passed=False)
PASSED = result(passed=True)
NO_VERDICT = result(passed=None)
ERRORED = result(status="error", passed=None)


@pytest.mark.parametrize("condition, expected", [
    ("failed", {"failed": True, "passed": False, "no_verdict": False, "errored": False}),
    ("error", {"failed": False, "passed": False, "no_verdict": False, "errored": True}),
    ("failed_or_error", {"failed": True, "passed": False, "no_verdict": False, "errored": True}),
])
def test_matches_conditions(condition: str, expected: dict[str, bool]) -> None:
    rule = alert(condition=condition)
    got = {"failed": matches(rule, FAILED), "passed": matches(rule, PASSED),
           "no_verdict": matches(rule, NO_VERDICT), "errored": matches(rule, ERRORED)}
    assert got == expected


def test_matches_default_condition_is_failed() -> None:
    assert matches(alert(), FAILED) and not matches(alert(), ERRORED)


def test_matches_only_its_rule_when_given() -> None:
    assert matches(alert(rule="slow"), result(rule="slow"))
    assert not matches(alert(rule="slow"), result(rule="errors"))
    assert matches(alert(rule=None), result(rule="errors"))
    assert not matches(alert(rule="slow", condition="error"), result(rule="other", status="error"))
