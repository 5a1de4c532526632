"""pipeline/alerts/incidents.py: windows, levels, sustained runs, cooldown digests and resolution."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.alerts.incidents import Notice, advance, is_idle, new_state, observe
from pipeline.contracts import AlertKind, AlertObservation
from pipeline.rules import AlertRule

W0 = 1_700_000_040.0  # a multiple of 60: the start of an aligned minute
assert W0 % 60 == 0


def obs(t: float, matched: bool = True, trace_id: str | None = None) -> AlertObservation:
    return AlertObservation(trace_id=trace_id or f"t{t - W0:g}", rule="r", scorer="s", scored_at_ns=round(t * 1e9),
                            matched=matched, reason=f"reason {t:g}")


class Group:
    """One group's state driven the way the alerter drives it, with the wall clock under test control."""

    def __init__(self, **rule: Any) -> None:
        self.alert = AlertRule(name="a", **rule)
        self.state = new_state({}, 0)
        self.sent: list[Notice] = []

    def see(self, t: float, matched: bool = True, *, wall: float | None = None, trace_id: str | None = None
            ) -> list[Notice]:
        out = observe(self.state, self.alert, obs(t, matched, trace_id), wall if wall is not None else t)
        self.sent += out
        return out

    def tick(self, wall: float, grace: float = 0.0) -> list[Notice]:
        out = advance(self.state, self.alert, watermark=wall - grace, wall_now=wall)
        self.sent += out
        return out

    def kinds(self) -> list[str]:
        return [n.kind.value for n in self.sent]


# -- windows are aligned and half-open -----------------------------------------------------------

def test_a_count_fires_on_the_match_that_reaches_it_within_one_window() -> None:
    g = Group(min_count=3, window_s=60, cooldown_s=0)
    assert g.see(W0) == [] and g.see(W0 + 30) == []
    [firing] = g.see(W0 + 59.999)
    assert firing.kind == AlertKind.FIRING and firing.failures == 3 and firing.level == 2
    assert firing.reading is not None and firing.reading.observed == 3 and firing.reading.threshold == 3
    assert [t for t, _ in firing.traces] == ["t0", "t30", "t59.999"]
    assert firing.window_start == W0


def test_the_end_of_a_window_belongs_to_the_next_one() -> None:
    g = Group(min_count=3, window_s=60, cooldown_s=0)
    g.see(W0 + 59.999)
    g.see(W0 + 60)  # [W0+60, W0+120): a new window
    g.see(W0 + 119.999)
    assert g.sent == []  # 1 + 2, never 3 in one window
    [firing] = g.see(W0 + 60.5)
    assert firing.kind == AlertKind.FIRING and firing.window_start == W0 + 60


def test_resolved_is_sent_once_when_a_whole_window_passes_without_breach() -> None:
    g = Group(min_count=2, window_s=60, cooldown_s=600)
    g.see(W0 + 1), g.see(W0 + 2)
    assert g.kinds() == ["firing"]
    g.see(W0 + 61)  # next window: 1 < 2, but it is still open
    assert g.tick(W0 + 119.9) == []
    [resolved] = g.tick(W0 + 120)
    assert resolved.kind == AlertKind.RESOLVED and resolved.failures == 3 and resolved.window_start == W0 + 60
    assert resolved.trace_ids == ["t61"]  # the match after the firing, reported exactly once
    assert g.tick(W0 + 180) == [] and g.tick(W0 + 600) == []
    assert g.kinds() == ["firing", "resolved"] and is_idle(g.state)


def test_a_window_with_no_results_at_all_resolves_the_incident() -> None:
    g = Group(min_count=1, window_s=10, cooldown_s=0)
    g.see(W0 + 5)
    assert g.tick(W0 + 10) == []  # the breaching window closed; the next one is open
    [resolved] = g.tick(W0 + 20)
    assert resolved.kind == AlertKind.RESOLVED and resolved.reading is not None and resolved.reading.matches == 0


def test_the_grace_period_waits_for_late_results_before_closing() -> None:
    g = Group(min_count=2, window_s=60, cooldown_s=0)
    g.see(W0 + 59)
    assert g.tick(W0 + 62, grace=5) == []  # W0+60 has passed, but not W0+60+5
    [firing] = g.see(W0 + 59.5, wall=W0 + 63)
    assert firing.kind == AlertKind.FIRING and firing.window_start == W0


def test_a_result_for_a_closed_window_counts_in_the_next_one() -> None:
    g = Group(min_count=2, window_s=60, cooldown_s=0)
    g.see(W0 + 10)
    g.tick(W0 + 60)
    g.see(W0 + 20, wall=W0 + 65)  # late: its window closed at W0+60
    [firing] = g.see(W0 + 70)
    assert firing.window_start == W0 + 60 and firing.failures == 2


# -- levels and rates ------------------------------------------------------------------------------

def test_a_rate_needs_min_samples_then_fires_warning_and_escalates_to_critical() -> None:
    g = Group(rate={"warning": 0.2, "critical": 0.5, "min_samples": 10}, window_s=60, cooldown_s=0)
    for i in range(5):
        g.see(W0 + i, matched=True)  # 5 of 5 failed, but fewer than 10 results: no breach
    assert g.sent == []
    for i in range(5, 14):
        g.see(W0 + i, matched=False)
    # 5 of 10 at the 10th result (50%) would be critical; it was the 10th result that made the sample
    first = g.sent[0]
    assert first.kind == AlertKind.FIRING and first.level == 2
    assert first.reading is not None and first.reading.observed == pytest.approx(0.5)


def test_a_rate_warning_then_escalation_reports_what_came_between() -> None:
    g = Group(rate={"warning": 0.2, "critical": 0.5, "min_samples": 10}, window_s=60, cooldown_s=3600)
    for i in range(8):
        g.see(W0 + i, matched=False)
    g.see(W0 + 8), g.see(W0 + 9)  # 2 of 10 = 20%: warning
    assert g.kinds() == ["firing"] and g.sent[0].level == 1
    for i in range(10, 20):
        g.see(W0 + i, matched=True)  # 12 of 20 = 60%: critical, despite the cooldown
    assert g.kinds() == ["firing", "escalated"]
    escalated = g.sent[1]
    assert escalated.level == 2 and escalated.reading is not None
    assert (escalated.reading.matches, escalated.reading.samples) == (8, 16)  # 50% reached at the 16th result
    assert escalated.suppressed == 6 and escalated.trace_ids == [f"t{i}" for i in range(10, 16)]  # held since firing
    assert g.state["held"]["n"] == 4  # the rest waits for the cooldown's digest


# -- sustained -------------------------------------------------------------------------------------

def test_sustained_fires_only_on_the_kth_consecutive_breaching_window() -> None:
    g = Group(min_count=2, window_s=60, sustained=3, cooldown_s=0)
    for k in range(2):
        g.see(W0 + 60 * k + 1), g.see(W0 + 60 * k + 2)
    assert g.sent == []
    g.see(W0 + 121)
    [firing] = g.see(W0 + 122)
    assert firing.kind == AlertKind.FIRING and firing.window_start == W0 + 120


def test_a_quiet_window_breaks_a_sustained_run() -> None:
    g = Group(min_count=1, window_s=60, sustained=2, cooldown_s=0)
    g.see(W0 + 1)
    g.see(W0 + 121)  # W0+60 had no results at all
    assert g.sent == []
    [firing] = g.see(W0 + 181)
    assert firing.window_start == W0 + 180


# -- cooldown and digest ---------------------------------------------------------------------------

def test_the_cooldown_holds_matches_and_the_digest_reports_exactly_those() -> None:
    g = Group(min_count=1, window_s=3600, cooldown_s=30)
    g.see(W0 + 1)  # firing
    for i, t in enumerate([W0 + 5, W0 + 10, W0 + 20]):
        assert g.see(t, trace_id=f"held{i}") == []
    assert g.tick(W0 + 30.9) == []
    [digest] = g.tick(W0 + 31)
    assert digest.kind == AlertKind.DIGEST and digest.suppressed == 3 and digest.failures == 3
    assert digest.trace_ids == ["held0", "held1", "held2"]
    assert g.tick(W0 + 100) == []  # nothing held since: no empty digest
    [second] = g.see(W0 + 110, trace_id="later")  # the cooldown after the digest has passed: sent at once
    assert second.kind == AlertKind.DIGEST and second.trace_ids == ["later"]
    assert g.see(W0 + 120, trace_id="held again") == []


def test_no_cooldown_reports_every_match_as_it_comes() -> None:
    g = Group(min_count=1, window_s=3600, cooldown_s=0)
    for i in range(4):
        g.see(W0 + i)
    assert g.kinds() == ["firing", "digest", "digest", "digest"]
    assert [n.trace_ids for n in g.sent[1:]] == [["t1"], ["t2"], ["t3"]]


def test_what_is_held_when_the_incident_resolves_is_reported_by_the_resolution() -> None:
    g = Group(min_count=1, window_s=60, cooldown_s=3600)
    g.see(W0 + 1), g.see(W0 + 2, trace_id="h1"), g.see(W0 + 3, trace_id="h2")
    [resolved] = g.tick(W0 + 120)
    assert resolved.kind == AlertKind.RESOLVED and resolved.suppressed == 2 and resolved.trace_ids == ["h1", "h2"]
    assert resolved.failures == 3 and g.state["held"] is None


def test_every_match_after_the_firing_is_reported_in_exactly_one_message() -> None:
    g = Group(min_count=2, window_s=10, cooldown_s=7)
    matched_at = [W0 + x * 0.7 for x in range(60)]  # 42 s of matches, ticks between them
    wall = W0
    for t in matched_at:
        while wall < t:
            g.tick(wall)
            wall += 0.5
        g.see(t)
    for extra in range(40):
        g.tick(wall + extra)
    reported = [tid for n in g.sent for tid in (n.trace_ids if n.kind != AlertKind.FIRING else [])]
    firing_traces = [tid for n in g.sent if n.kind == AlertKind.FIRING for tid, _ in n.traces]
    assert sorted(reported + firing_traces) == sorted(f"t{t - W0:g}" for t in matched_at)
    assert g.kinds()[-1] == "resolved" and g.kinds().count("resolved") == g.kinds().count("firing")


# -- restart ---------------------------------------------------------------------------------------

def test_the_state_survives_a_json_round_trip_mid_window() -> None:
    g = Group(min_count=3, window_s=60, cooldown_s=0)
    g.see(W0 + 1), g.see(W0 + 2)
    g.state = orjson.loads(orjson.dumps(g.state))  # what the Faust table changelog keeps
    [firing] = g.see(W0 + 3)
    assert firing.failures == 3 and len(firing.traces) == 3


def test_message_ids_are_stable_for_the_same_history() -> None:
    a, b = Group(min_count=1, cooldown_s=0), Group(min_count=1, cooldown_s=0)
    for g in (a, b):
        g.see(W0 + 1), g.see(W0 + 2), g.tick(W0 + 200)
    assert [n.notice_id for n in a.sent] == [n.notice_id for n in b.sent]
    assert len({n.notice_id for n in a.sent}) == 3


def test_a_rate_that_fired_early_in_a_window_does_not_resolve_on_that_same_window() -> None:
    g = Group(rate={"critical": 0.5, "min_samples": 4}, window_s=60, cooldown_s=3600)
    for i in range(3):
        g.see(W0 + i)  # 3 failures...
    g.see(W0 + 3, matched=False)  # ...of the first 4 results: 75%, fires
    for i in range(4, 24):
        g.see(W0 + i, matched=False)  # the window ends at 3 of 24
    assert g.kinds() == ["firing"]
    assert g.tick(W0 + 60) == []  # the window it fired in closed below the threshold: still firing
    [resolved] = g.tick(W0 + 120)  # the next whole window had nothing: resolved
    assert resolved.kind == AlertKind.RESOLVED


def test_a_sustained_group_that_goes_silent_is_forgotten() -> None:
    g = Group(min_count=1, window_s=10, sustained=3, cooldown_s=0)
    g.see(W0 + 1)
    g.tick(W0 + 10)
    assert not is_idle(g.state)  # one breaching window counts towards a run
    g.tick(W0 + 100)
    assert is_idle(g.state) and g.sent == []


def test_held_matches_keep_reasons_only_for_the_ones_a_message_shows() -> None:
    g = Group(min_count=1, window_s=3600, cooldown_s=3600)
    for i in range(50):
        g.see(W0 + i)
    held = g.state["held"]
    assert held["n"] == 49 and sum(1 for _, reason in held["traces"] if reason) == 10
