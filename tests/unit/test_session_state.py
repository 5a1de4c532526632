"""pipeline/sessions/state.py: gathering a conversation's turns, closing it, re-opening it as a new version."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from pipeline.contracts.sessions import Session, SessionTurns, Turn
from pipeline.sessions import SessionConfig, add_turns, close_due, deadline_ns, open_turns
from pipeline.sessions.state import State

S = 1_000_000_000  # ns per second
CFG = SessionConfig(idle_timeout_s=600, reopen_window_s=1_800)
T0 = 1_700_000_000 * S


def turn(session: str, n: int, *, version: int = 1, **kw: Any) -> Turn:
    """Turn n of a session: it started n minutes into the conversation."""
    return Turn(session_id=session, trace_id=f"{session}-t{n:02d}", trace_version=version, project="bot",
                started_ns=T0 + n * 60 * S, ended_ns=T0 + n * 60 * S + 5 * S, input=f"question {n}",
                output=f"answer {n} (v{version})", **kw)


def feed(state: State | None, turns: list[Turn], now_ns: int) -> tuple[State | None, list[Session]]:
    return add_turns(state, turns, now_ns, CFG)


def numbers(session: Session) -> list[int]:
    return [int(t.trace_id.rsplit("-t", 1)[1]) for t in session.turns]


# -- gathering ------------------------------------------------------------------------------------

def test_interleaved_shuffled_duplicated_sessions_each_close_once_with_all_turns_in_order() -> None:
    rng = random.Random(8)
    sessions = ["alice", "bob", "carol"]
    messages = [[turn(s, n)] for s in sessions for n in range(1, 11)]
    messages += [[turn(s, n)] for s in sessions for n in rng.sample(range(1, 11), 4)]  # redelivered
    messages += [[turn(s, 3), turn(s, 3), turn(s, 7)] for s in sessions]  # duplicates inside one batch
    rng.shuffle(messages)
    states: dict[str, State | None] = dict.fromkeys(sessions)
    closed: list[Session] = []
    now = T0
    for batch in messages:
        now += S
        key = batch[0].session_id
        states[key], out = feed(states[key], batch, now)
        closed += out
    assert closed == []  # nothing closes while turns keep coming
    for key in sessions:
        assert [t.trace_id for t in open_turns(states[key])] == [f"{key}-t{n:02d}" for n in range(1, 11)]
        states[key], out = close_due(states[key], now + CFG.idle_timeout_s * S, CFG)
        closed += out
    assert sorted((s.session_id, s.version) for s in closed) == [(k, 1) for k in sessions]
    for session in closed:
        assert numbers(session) == list(range(1, 11))
        assert session.close_reason == "idle_timeout" and session.status == "complete"
        assert session.project == "bot"
        assert session.started_ns == T0 + 60 * S and session.ended_ns == T0 + 600 * S + 5 * S
        # nothing more to close: a tick later emits nothing
        assert close_due(states[session.session_id], now + CFG.idle_timeout_s * S + S, CFG)[1] == []


def test_a_newer_trace_version_replaces_the_turn_and_an_older_one_is_ignored() -> None:
    state, _ = feed(None, [turn("s", 1), turn("s", 2, version=2)], T0)
    state, _ = feed(state, [turn("s", 2, version=1), turn("s", 1, version=3)], T0 + S)
    assert [(t.trace_id, t.trace_version) for t in open_turns(state)] == [("s-t01", 3), ("s-t02", 2)]
    assert open_turns(state)[0].output == "answer 1 (v3)"


def test_a_duplicate_does_not_extend_the_idle_time() -> None:
    state, _ = feed(None, [turn("s", 1)], T0)
    state, _ = feed(state, [turn("s", 1)], T0 + 500 * S)
    assert deadline_ns(state, CFG) == T0 + 600 * S


def test_turns_of_another_session_are_refused() -> None:
    state, _ = feed(None, [turn("s", 1)], T0)
    with pytest.raises(ValueError, match="other sessions"):
        feed(state, [turn("other", 2)], T0 + S)
    with pytest.raises(ValueError, match="other sessions"):
        SessionTurns(session_id="s", turns=[turn("other", 1)])
    assert SessionTurns(tick=True).turns == []


# -- closing --------------------------------------------------------------------------------------

def test_end_marker_closes_at_once() -> None:
    state, _ = feed(None, [turn("s", 1), turn("s", 2)], T0)
    state, closed = feed(state, [turn("s", 3, ends_session=True)], T0 + S)
    assert [(s.version, s.close_reason, numbers(s)) for s in closed] == [(1, "end_marker", [1, 2, 3])]
    assert not state["open"]
    assert close_due(state, T0 + 10_000 * S, CFG)[1] == []  # not closed a second time


def test_end_marker_that_arrives_before_earlier_turns_closes_again_when_they_come() -> None:
    state, closed = feed(None, [turn("s", 3, ends_session=True)], T0)
    assert numbers(closed[0]) == [3]
    state, closed = feed(state, [turn("s", 1), turn("s", 2)], T0 + S)  # still ends with the marker
    assert [(s.version, s.close_reason, numbers(s)) for s in closed] == [(2, "end_marker", [1, 2, 3])]


def test_with_an_end_grace_earlier_turns_that_come_after_the_marker_join_the_one_close() -> None:
    grace = SessionConfig(idle_timeout_s=600, reopen_window_s=1_800, end_grace_s=2)
    state, closed = add_turns(None, [turn("s", 3, ends_session=True)], T0, grace)
    assert closed == [] and deadline_ns(state, grace) == T0 + 2 * S
    state, closed = add_turns(state, [turn("s", 1)], T0 + S, grace)  # within the grace: waits again
    assert closed == [] and deadline_ns(state, grace) == T0 + 3 * S
    state, closed = add_turns(state, [turn("s", 2)], T0 + 2 * S, grace)
    assert close_due(state, T0 + 4 * S - 1, grace)[1] == []
    state, closed = close_due(state, T0 + 4 * S, grace)
    assert [(s.version, s.close_reason, numbers(s)) for s in closed] == [(1, "end_marker", [1, 2, 3])]


def test_with_an_end_grace_a_later_turn_than_the_marker_keeps_the_session_open_until_idle() -> None:
    grace = SessionConfig(idle_timeout_s=600, reopen_window_s=1_800, end_grace_s=2)
    state, _ = add_turns(None, [turn("s", 1, ends_session=True)], T0, grace)
    state, closed = add_turns(state, [turn("s", 2)], T0 + S, grace)  # the user came back before the close
    assert closed == [] and deadline_ns(state, grace) == T0 + S + 600 * S
    state, closed = close_due(state, T0 + 601 * S, grace)
    assert [(s.version, s.close_reason, numbers(s)) for s in closed] == [(1, "idle_timeout", [1, 2])]


def test_a_turn_after_the_end_marker_reopens_until_idle() -> None:
    state, _ = feed(None, [turn("s", 1, ends_session=True)], T0)
    state, closed = feed(state, [turn("s", 2)], T0 + S)
    assert closed == [] and state["open"] and state["version"] == 2
    state, closed = close_due(state, T0 + S + 600 * S, CFG)
    assert [(s.version, s.close_reason, numbers(s)) for s in closed] == [(2, "idle_timeout", [1, 2])]


def test_idle_close_happens_at_the_boundary_not_before() -> None:
    state, _ = feed(None, [turn("s", 1)], T0)
    state, _ = feed(state, [turn("s", 2)], T0 + 100 * S)
    assert deadline_ns(state, CFG) == T0 + 700 * S
    state, closed = close_due(state, T0 + 700 * S - 1, CFG)
    assert closed == [] and state["open"]
    state, closed = close_due(state, T0 + 700 * S, CFG)
    assert [(s.version, s.close_reason, s.closed_at_ns) for s in closed] == [(1, "idle_timeout", T0 + 700 * S)]


def test_an_incomplete_turn_makes_the_session_incomplete() -> None:
    state, _ = feed(None, [turn("s", 1), turn("s", 2, status="incomplete")], T0)
    _, closed = close_due(state, T0 + 600 * S, CFG)
    assert closed[0].status == "incomplete"


# -- re-opening -----------------------------------------------------------------------------------

def ten_turns_closed() -> tuple[State, Session]:
    state = None
    for n in range(1, 11):
        state, _ = feed(state, [turn("s", n)], T0 + n * S)
    state, closed = close_due(state, T0 + 10 * S + 600 * S, CFG)
    assert len(closed) == 1 and closed[0].version == 1
    return state, closed[0]


def test_a_late_turn_after_the_idle_close_gives_version_2_with_11_turns() -> None:
    state, first = ten_turns_closed()
    closed_at = first.closed_at_ns
    state, closed = feed(state, [turn("s", 11)], closed_at + 60 * S)
    assert closed == [] and state["open"] and state["version"] == 2
    assert len(open_turns(state)) == 11  # a per-turn evaluator sees the whole conversation
    state, closed = close_due(state, closed_at + 660 * S, CFG)
    assert [(s.version, numbers(s)) for s in closed] == [(2, list(range(1, 12)))]
    assert numbers(first) == list(range(1, 11))  # the first version is unchanged


def test_a_late_duplicate_after_close_does_not_reopen() -> None:
    state, first = ten_turns_closed()
    state, closed = feed(state, [turn("s", 4)], first.closed_at_ns + S)
    assert closed == [] and not state["open"] and state["version"] == 1


def test_a_turn_that_arrives_before_the_tick_closes_the_idle_session_first() -> None:
    state, _ = feed(None, [turn("s", 1)], T0)
    state, closed = feed(state, [turn("s", 2)], T0 + 601 * S)  # the tick has not run yet
    assert [(s.version, numbers(s)) for s in closed] == [(1, [1])]
    assert state["open"] and state["version"] == 2 and len(open_turns(state)) == 2


def test_after_the_reopen_window_a_late_turn_starts_fresh_but_counts_versions_up() -> None:
    state, first = ten_turns_closed()
    state, _ = close_due(state, first.closed_at_ns + 1_800 * S - 1, CFG)
    assert open_turns(state)  # still within the window: the turns are kept
    state, _ = close_due(state, first.closed_at_ns + 1_800 * S, CFG)
    assert state is not None and state["tombstone"] and state["turns"] == {}
    assert open_turns(state) == []
    assert len(orjson.dumps(state)) < 1_000  # small

    later = first.closed_at_ns + 5_000 * S
    state, closed = feed(state, [turn("s", 4), turn("s", 11)], later)  # turn 4 is an old duplicate
    assert closed == [] and state["open"] and state["version"] == 2
    state, closed = close_due(state, later + 600 * S, CFG)
    assert [(s.version, numbers(s)) for s in closed] == [(2, [11])]
    # and once more: version 3, never 1 again
    state, _ = close_due(state, later + 600 * S + 1_800 * S, CFG)
    state, _ = feed(state, [turn("s", 12)], later + 10_000 * S)
    _, closed = close_due(state, later + 10_600 * S, CFG)
    assert [(s.version, numbers(s)) for s in closed] == [(3, [12])]


def test_a_tombstone_is_kept_unless_a_ttl_is_set() -> None:
    state, first = ten_turns_closed()
    state, _ = close_due(state, first.closed_at_ns + 1_800 * S, CFG)
    assert deadline_ns(state, CFG) is None
    cfg = SessionConfig(idle_timeout_s=600, reopen_window_s=1_800, tombstone_ttl_s=86_400)
    state, _ = close_due(state, first.closed_at_ns + 86_400 * S, cfg)
    assert state is None
    with pytest.raises(ValueError):
        SessionConfig(reopen_window_s=100, tombstone_ttl_s=10)


# -- the state is what a Faust table stores --------------------------------------------------------

def test_state_survives_a_json_round_trip_mid_session() -> None:
    state, _ = feed(None, [turn("s", n) for n in (5, 1, 3)], T0)
    restored = orjson.loads(orjson.dumps(state))
    assert restored == state
    restored, _ = feed(restored, [turn("s", 2), turn("s", 3)], T0 + S)
    restored, closed = feed(orjson.loads(orjson.dumps(restored)), [turn("s", 4, ends_session=True)], T0 + 2 * S)
    assert closed == []  # turn 5 started later, so the marker on 4 is not the last turn
    restored, closed = close_due(orjson.loads(orjson.dumps(restored)), T0 + 602 * S, CFG)
    assert [(s.version, numbers(s)) for s in closed] == [(1, [1, 2, 3, 4, 5])]
    assert Session.model_validate_json(closed[0].model_dump_json()) == closed[0]


def test_nothing_given_changes_nothing() -> None:
    assert add_turns(None, [], T0) == (None, [])


# -- judging while it runs ------------------------------------------------------------------------

def test_a_rule_done_with_a_version_is_listed_in_its_snapshots_until_the_session_reopens() -> None:
    from pipeline.contracts.sessions import RuleFinished, SessionStatus
    from pipeline.sessions import mark_finished, snapshot

    state, _ = feed(None, [turn("s", 1), turn("s", 2), turn("s", 3)], T0)
    assert mark_finished(state, [RuleFinished(rule="must-not", session_version=1, turn=3)]) is True
    assert mark_finished(state, [RuleFinished(rule="must-not", session_version=1, turn=3)]) is False  # once
    assert mark_finished(state, [RuleFinished(rule="other", session_version=0 + 2, turn=1)]) is False  # not this one
    state, _ = feed(state, [turn("s", 4)], T0 + S)
    snap = snapshot(state, T0 + S)
    assert snap.status == SessionStatus.OPEN and snap.close_reason is None
    assert numbers(snap) == [1, 2, 3, 4] and snap.finished_rules == ["must-not"]

    state, closed = close_due(state, T0 + S + 601 * S, CFG)
    assert closed and closed[0].finished_rules == []  # a closing version is judged by every rule
    state, _ = feed(state, [turn("s", 5)], T0 + 700 * S)  # a late turn: version 2 is judged afresh
    assert state is not None and state["version"] == 2 and snapshot(state, T0 + 700 * S).finished_rules == []


def test_missed_ticks_give_the_same_result_as_ticks_on_time() -> None:
    """No tick ran for longer than the idle timeout and the reopen window together (a worker was down):
    the session closed at its deadline, was compacted, and a new turn starts a fresh version."""
    state, _ = feed(None, [turn("s", 1), turn("s", 2)], T0)
    late = T0 + (600 + 1_800 + 5) * S
    state, closed = feed(state, [turn("s", 3)], late)
    assert [(s.version, s.close_reason, s.closed_at_ns, numbers(s)) for s in closed] == [
        (1, "idle_timeout", T0 + 600 * S, [1, 2])]
    assert state["version"] == 2 and [t.trace_id for t in open_turns(state)] == ["s-t03"]  # not the old turns
