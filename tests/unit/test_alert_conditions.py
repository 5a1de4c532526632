"""pipeline/alerts/evaluator.py: per-result conditions beyond pass / fail, and one window per group."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.alerts.evaluator import group_key, matches, observation
from pipeline.alerts.incidents import new_state, observe
from pipeline.alerts.message import render
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


def test_group_by_keeps_one_incident_per_group_and_names_the_group() -> None:
    rule = alert(condition="score_below", value=0.5, group_by=["agent", "model"], min_count=2, window_s=60)
    states: dict[str, Any] = {}
    fired = []
    for i, agent in enumerate(["planner", "researcher", "planner"]):
        res = result(0.1, agent=agent, trace_id=f"t{i}")
        seen = observation(rule, res, matches(rule, res))
        key = group_key(rule.name, seen.group)
        state = states.setdefault(key, new_state(seen.group, 0))
        for notice in observe(state, rule, seen, T0 / 1e9):
            fired.append(render(rule, notice, {"group": seen.group, "rule": seen.rule, "scorer": seen.scorer},
                                channel="console"))
    assert sorted(states) == ["a|agent=planner|model=gpt-4o", "a|agent=researcher|model=gpt-4o"]
    (only,) = fired  # the researcher's single failure is still below min_count in its own window
    assert "(agent planner, model gpt-4o)" in only.title and only.trace_ids == ["t0", "t2"]
    assert only.group == {"agent": "planner", "model": "gpt-4o"}
    assert group_key("a", {}) == "a"  # no group_by: one incident per alert rule


@pytest.mark.parametrize(("fields", "message"), [
    ({"min_count": 3, "rate": {"critical": 0.2}}, "set one of min_count, count or rate"),
    ({"count": {"critical": 5, "warning": 5}}, "warning must be lower than critical"),
    ({"rate": {"critical": 1.5}}, "less than or equal to 1"),
    ({"sustained": 0}, "greater than or equal to 1"),
    ({"cooldown_s": -1}, "greater than or equal to 0"),
])
def test_levels_are_checked(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        alert(**fields)


def test_levels_resolve_from_the_shorthand_count_or_rate() -> None:
    assert alert().levels.critical == 1 and alert().levels.measure == "count"
    assert alert(min_count=4).levels.critical == 4
    lv = alert(rate={"critical": 0.25, "warning": 0.1, "min_samples": 30}).levels
    assert (lv.measure, lv.warning, lv.critical, lv.min_samples) == ("rate", 0.1, 0.25, 30)
    assert alert(rate={"critical": 0.25}, sustained=2).describe() == (
        "critical at failure rate ≥ 25% per 60s window (≥ 10 results), for 2 windows in a row")


def test_a_rate_alert_message_says_the_value_against_the_threshold() -> None:
    rule = alert(rate={"critical": 0.25, "min_samples": 4}, window_s=60, cooldown_s=0)
    state = new_state({}, 0)
    notices = []
    for i, passed in enumerate([False, True, False, True]):
        res = result(0.1 if not passed else 0.9, trace_id=f"t{i}").model_copy(update={"passed": passed})
        notices += observe(state, rule, observation(rule, res, matches(alert(condition="failed"), res)), T0 / 1e9)
    (firing,) = notices
    sent = render(rule, firing, {"group": {}, "rule": "quality", "scorer": "helpfulness"}, channel="console",
                  trace_url_template="https://traces.example/{trace_id}",
                  dashboard_url_template="https://grafana.example/d/x?var-rule={rule}&from={from_ms}&to={to_ms}")
    assert sent.title == "CRITICAL [a] quality firing: failure rate 50% vs threshold 25% (2 of 4 results) in 60s"
    assert (sent.measure, sent.observed, sent.threshold, sent.samples, sent.failures) == ("rate", 0.5, 0.25, 4, 2)
    assert [t.url for t in sent.traces] == ["https://traces.example/t0", "https://traces.example/t2"]
    assert sent.dashboard_url is not None and sent.dashboard_url.startswith("https://grafana.example/d/x?var-rule=quality")


def test_session_verdicts_alert_with_their_conversation_and_a_continue_is_not_counted() -> None:
    from pipeline.alerts.evaluator import applies, observation
    from pipeline.contracts import ScoreResult
    from pipeline.rules import AlertRule

    alert = AlertRule(name="must-not", rule="refunds")

    def look(turn: int, passed: bool | None, final: bool = False) -> ScoreResult:
        return ScoreResult(job_id=f"j{turn}", rule="refunds", scorer="session_criteria", trace_id=f"t{turn}",
                           trace_version=1, status="scored", passed=passed, reason="promised a refund",
                           session_id="conv-7", session_version=1, turn=turn, final=final)

    assert not applies(alert, look(2, None))  # "continue": no verdict yet
    errored = look(4, None).model_copy(update={"status": "error", "error_type": "TimeoutError"})
    assert not applies(alert, errored)  # a look that errored comes back every turn: the close reports it once
    assert applies(alert, errored.model_copy(update={"final": True}))
    assert applies(alert, look(3, False)) and applies(alert, look(10, False, final=True))
    seen = observation(alert, look(3, False), matched=True)
    assert seen.trace_id == "t3" and seen.reason == "session conv-7 v1 after turn 3, still running: promised a refund"


def test_a_span_rules_alert_groups_by_span_name() -> None:
    rule = alert(condition="score_below", value=0.5, group_by=["span_name"])
    extract = result(0.1).model_copy(update={"span_id": "s1", "span_name": "extract"})
    seen = observation(rule, extract, matches(rule, extract))
    assert seen.group == {"span_name": "extract"} and group_key(rule.name, seen.group) == "a|span_name=extract"
    assert observation(rule, result(0.1), True).group == {"span_name": ""}  # a trace rule's result
