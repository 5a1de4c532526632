"""pipeline/alerts/evaluator.py: per-result conditions beyond pass / fail, and one window per group."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.alerts.evaluator import group_of, matches, record, window_key
from pipeline.alerts.message import build_alert
from pipeline.contracts import CriterionVerdict, ScoreResult
from pipeline.rules import AlertRule

T0 = 1_700_000_000 * 1_000_000_000


def result(value: Any = 0.4, *, status: str = "scored", criteria: list[tuple[str, str]] = (), agent: str = "planner",
           model: str = "gpt-4o", trace_id: str = "t") -> ScoreResult:
    return ScoreResult(job_id=f"j-{trace_id}", rule="quality", scorer="helpfulness", trace_id=trace_id,
                       trace_version=1, status=status, value=value, passed=None, agent_name=agent, model=model,
                       criteria=[CriterionVerdict(criterion=c, verdict=v) for c, v in criteria], scored_at_ns=T0)


def alert(**kw: Any) -> AlertRule:
    return AlertRule(name="a", rule="quality", **kw)


@pytest.mark.parametrize(("rule", "res", "hit"), [
    (alert(condition="score_below", value=0.5), result(0.4), True),
    (alert(condition="score_below", value=0.5), result(0.5), False),
    (alert(condition="score_below", value=0.5), result("bad"), False),  # a label is not a score
    (alert(condition="score_below", value=0.5), result(None, status="error"), False),
    (alert(condition="score_above", value=2000), result(2500.0), True),
    (alert(condition="score_above", value=2000), result(True), False),  # a bool is not a score
    (alert(condition="verdict_false"), result(criteria=[("polite", "true"), ("grounded", "false")]), True),
    (alert(condition="verdict_false"), result(criteria=[("polite", "true"), ("grounded", "inconclusive")]), False),
    (alert(condition="category_in", categories=["not_completed", "partial"]), result("not_completed"), True),
    (alert(condition="category_in", categories=["not_completed"]), result("completed"), False),
])
def test_per_result_conditions(rule: AlertRule, res: ScoreResult, hit: bool) -> None:
    assert matches(rule, res) is hit


@pytest.mark.parametrize(("fields", "message"), [
    ({"condition": "score_below"}, "needs `value`"),
    ({"condition": "category_in"}, "needs `categories`"),
    ({"group_by": ["agent", "colour"]}, "group_by \\['colour'\\]"),
])
def test_a_condition_without_its_operand_is_rejected(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        alert(**fields)


def test_group_by_keeps_one_window_per_group_and_names_the_group() -> None:
    rule = alert(condition="score_below", value=0.5, group_by=["agent", "model"], min_count=2, window_s=60)
    windows: dict[str, Any] = {}
    fired = []
    for i, agent in enumerate(["planner", "researcher", "planner"]):
        res = result(0.1, agent=agent, trace_id=f"t{i}")
        key = window_key(rule, group_of(rule, res))
        windows[key], firing = record(windows.get(key), rule, res)
        if firing:
            fired.append(build_alert(rule, res, firing, "console", group=group_of(rule, res)))
    assert sorted(windows) == ["a|agent=planner|model=gpt-4o", "a|agent=researcher|model=gpt-4o"]
    (only,) = fired  # the researcher's single failure is still below min_count in its own window
    assert only.title.endswith("(agent planner, model gpt-4o)") and only.trace_ids == ["t0", "t2"]
    assert window_key(alert(), {}) == "a"  # no group_by: the window is keyed as before
