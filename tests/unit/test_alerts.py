"""pipeline/alerts/evaluator.py: which results match an alert rule, and when a count window fires."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.alerts.evaluator import MAX_TRACE_IDS, matches, record
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


# -- record: min_count 1 ----------------------------------------------------------------------------

def test_min_count_1_fires_on_every_result() -> None:
    rule = alert(min_count=1)
    state = None
    for i in range(5):
        state, firing = record(state, rule, result(f"t{i}", at_ns=T0 + i, reason=f"r{i}"))
        assert firing is not None
        assert firing.failures == 1 and firing.trace_ids == [f"t{i}"] and firing.reasons == [f"r{i}"]
        assert state == {"events": []}


# -- record: min_count 3 ----------------------------------------------------------------------------

def test_min_count_3_fires_exactly_at_the_third_and_resets() -> None:
    rule = alert(min_count=3, window_s=60)
    state = None
    firings = []
    for i in range(7):
        state, firing = record(state, rule, result(f"t{i}", at_ns=T0 + i * S))
        firings.append(firing)
    assert [f is not None for f in firings] == [False, False, True, False, False, True, False]
    third = firings[2]
    assert third.failures == 3 and third.trace_ids == ["t0", "t1", "t2"]
    assert third.reasons == ["too slow"] * 3
    assert firings[5].trace_ids == ["t3", "t4", "t5"]  # a new window after firing
    assert len(state["events"]) == 1


def test_events_outside_the_window_do_not_count() -> None:
    rule = alert(min_count=3, window_s=60)
    state, f1 = record(None, rule, result("a", at_ns=T0))
    state, f2 = record(state, rule, result("b", at_ns=T0 + 61 * S))
    state, f3 = record(state, rule, result("c", at_ns=T0 + 62 * S))
    assert f1 is f2 is f3 is None
    assert [e[1] for e in state["events"]] == ["b", "c"]
    state, f4 = record(state, rule, result("d", at_ns=T0 + 63 * S))
    assert f4 is not None and f4.trace_ids == ["b", "c", "d"]


def test_window_boundary_is_exclusive() -> None:
    """An event exactly window_s older than the newest no longer counts; one a millisecond younger does."""
    rule = alert(min_count=3, window_s=60)
    state, _ = record(None, rule, result("a", at_ns=T0))
    state, _ = record(state, rule, result("b", at_ns=T0 + 30 * S))
    _, just_inside = record(state, rule, result("c", at_ns=T0 + 60 * S - 1_000_000))
    assert just_inside is not None and just_inside.trace_ids == ["a", "b", "c"]
    state_after, at_boundary = record(state, rule, result("c", at_ns=T0 + 60 * S))
    assert at_boundary is None
    assert [e[1] for e in state_after["events"]] == ["b", "c"]


def test_window_uses_event_time_not_arrival_time() -> None:
    """Results recorded back to back but scored hours apart never add up."""
    rule = alert(min_count=2, window_s=60)
    old = 978_307_200 * S  # 2001: far from the wall clock
    state, f1 = record(None, rule, result("a", at_ns=old))
    state, f2 = record(state, rule, result("b", at_ns=old + 3600 * S))
    assert f1 is None and f2 is None
    _, f3 = record(state, rule, result("c", at_ns=old + 3601 * S))
    assert f3 is not None and f3.trace_ids == ["b", "c"]


def test_firing_keeps_the_last_trace_ids_only() -> None:
    n = MAX_TRACE_IDS + 5
    rule = alert(min_count=n, window_s=3600)
    state = None
    for i in range(n):
        state, firing = record(state, rule, result(f"t{i:02d}", at_ns=T0 + i * S, reason="x" * 1000))
    assert firing is not None and firing.failures == n
    assert firing.trace_ids == [f"t{i:02d}" for i in range(5, n)]
    assert len(firing.reasons) == MAX_TRACE_IDS and all(len(r) == 300 for r in firing.reasons)


def test_record_does_not_mutate_the_previous_state() -> None:
    rule = alert(min_count=3, window_s=60)
    state, _ = record(None, rule, result("a", at_ns=T0))
    snapshot = [list(e) for e in state["events"]]
    record(state, rule, result("b", at_ns=T0 + S))
    assert state["events"] == snapshot
