"""The life of one session's assembly state. Pure: state and turns in, state and closed sessions out.

State is a JSON-able dict (it lives in a Faust table keyed by session id, and its changelog):

    session_id, version, open (bool), tombstone (bool),
    turns {trace_id: turn dict}   newest trace_version of each trace; empty in a tombstone
    seen {trace_id: trace_version} turns dropped by a tombstone, so a replayed old turn stays a duplicate
    finished {rule: turn}          rules that judge each turn and reached their verdict on this version
    opened_at_ns, last_turn_at_ns, closed_at_ns

open --(the latest turn, in turn order, carries the end marker, and end_grace_s passed with no
        new turn)--> closed, `end_marker` (the grace lets earlier turns whose traces closed later
        arrive first, instead of each re-opening the session; 0 closes at once)
open --(no new turn for idle_timeout_s)---------------------------> closed, `idle_timeout`
closed --(a new turn within reopen_window_s)--> open again as version + 1, with every turn, old and new
closed --(reopen_window_s passed)--> tombstone: turns dropped, version kept
tombstone --(a new turn)--> open as version + 1 with the new turns only (versions never repeat,
            because storage replaces rows on (session_id, version))
tombstone --(tombstone_ttl_s passed, when set)--> forgotten (a later turn would start at version 1)

A turn counts once per (trace_id, trace_version); an older or equal trace_version of a known trace
is a duplicate and changes nothing (it neither re-opens a session nor extends its idle time). Turn
order is (started_ns, trace_id). Idle time runs on the caller's clock (`now_ns`: arrival), not on
the turns' timestamps, which come from the senders' clocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.contracts.sessions import RuleFinished, Session, SessionCloseReason, SessionStatus, Turn
from pipeline.contracts.traces import TraceStatus

if TYPE_CHECKING:
    from pipeline.settings import Settings

State = dict[str, Any]
MAX_SEEN = 5_000  # trace ids a tombstone remembers; the oldest go first


@dataclass(frozen=True)
class SessionConfig:
    idle_timeout_s: float = 600.0
    reopen_window_s: float = 1_800.0
    tombstone_ttl_s: float | None = None  # None: keep the last version for ever (a few hundred bytes)
    end_grace_s: float = 0.0  # after the end marker, wait this long for earlier turns still on their way

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= 0 or self.reopen_window_s < 0 or self.end_grace_s < 0:
            raise ValueError("idle_timeout_s must be > 0, reopen_window_s and end_grace_s >= 0")
        if self.tombstone_ttl_s is not None and self.tombstone_ttl_s < self.reopen_window_s:
            raise ValueError("tombstone_ttl_s must be at least reopen_window_s")

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionConfig:
        return cls(settings.session_idle_timeout_s, settings.session_reopen_window_s,
                   settings.session_tombstone_ttl_s, settings.session_end_grace_s)


DEFAULT_CONFIG = SessionConfig()


def new_state(session_id: str, now_ns: int, version: int = 1) -> State:
    return {"session_id": session_id, "version": version, "open": True, "tombstone": False, "turns": {},
            "seen": {}, "finished": {}, "opened_at_ns": now_ns, "last_turn_at_ns": now_ns, "closed_at_ns": None}


def add_turns(state: State | None, turns: Iterable[Turn], now_ns: int,
              cfg: SessionConfig = DEFAULT_CONFIG) -> tuple[State | None, list[Session]]:
    """Merge turns of one session (any order, duplicates allowed); returns the state and what closed.

    Whatever was already due closes first (so the result does not depend on when ticks ran); then a
    closed session re-opens, a tombstone starts a fresh assembly, and a session whose latest turn
    carries the end marker closes (at once when `end_grace_s` is 0, else on the tick after it)."""
    turns = list(turns)
    closed: list[Session] = []
    if state is not None:
        state, closed = close_due(state, now_ns, cfg)
    session_id = state["session_id"] if state is not None else (turns[0].session_id if turns else None)
    strays = sorted({t.session_id for t in turns if t.session_id != session_id})
    if strays:
        raise ValueError(f"turns of other sessions given to session {session_id!r}: {strays}")
    fresh = _fresh(state, turns)
    if not fresh:
        return state, closed
    assert session_id is not None
    if state is None:
        state = new_state(session_id, now_ns)
    elif state["tombstone"]:
        state.update(version=state["version"] + 1, open=True, tombstone=False, turns={}, opened_at_ns=now_ns,
                     closed_at_ns=None, finished={})
    elif not state["open"]:
        state.update(version=state["version"] + 1, open=True, closed_at_ns=None, finished={})
    for turn in fresh:
        state["turns"][turn.trace_id] = turn.model_dump(mode="json")
        state["seen"].pop(turn.trace_id, None)
    state["last_turn_at_ns"] = now_ns
    if _ends(state) and cfg.end_grace_s == 0:
        closed.append(_close(state, SessionCloseReason.END, now_ns))
    return state, closed


def close_due(state: State, now_ns: int, cfg: SessionConfig = DEFAULT_CONFIG) -> tuple[State | None, list[Session]]:
    """Close an idle session, compact a closed one into a tombstone, or forget an expired tombstone: every
    step that is due by `now_ns`, each at its own deadline (ticks may have been missed). Returns None as
    the state when the key can be deleted."""
    closed: list[Session] = []
    current: State | None = state
    while current is not None:  # every step that is due, as if each tick had come on time
        due = deadline_ns(current, cfg)
        if due is None or now_ns < due:
            break
        if current["open"]:  # closed at its deadline, so a late tick does not stretch the reopen window
            reason = SessionCloseReason.END if _ends(current) else SessionCloseReason.IDLE
            closed.append(_close(current, reason, due))
        elif not current["tombstone"]:
            seen = {**current["seen"], **{tid: t["trace_version"] for tid, t in _ordered_items(current)}}
            current.update(tombstone=True, turns={}, seen=dict(list(seen.items())[-MAX_SEEN:]))
        else:
            current = None
    return current, closed


def mark_finished(state: State | None, finished: Iterable[RuleFinished]) -> bool:
    """Record rules that reached their verdict while the session runs; only for its current version
    (a verdict on an older version says nothing about the re-opened conversation). True if it changed."""
    if state is None or state["tombstone"]:
        return False
    changed = False
    marks = state.setdefault("finished", {})
    for item in finished:
        if item.session_version == state["version"] and item.rule not in marks:
            marks[item.rule] = item.turn
            changed = True
    return changed


def snapshot(state: State, now_ns: int) -> Session:
    """The open session as it stands, for judging after its latest turn."""
    turns = [Turn.model_validate(t) for t in _ordered(state)]
    return _session(state, turns, SessionStatus.OPEN, None, now_ns,
                    finished_rules=sorted(state.get("finished", {})))


def deadline_ns(state: State, cfg: SessionConfig = DEFAULT_CONFIG) -> int | None:
    """When this state next needs `close_due` (None: never)."""
    if state["open"]:
        wait = cfg.end_grace_s if _ends(state) else cfg.idle_timeout_s
        return state["last_turn_at_ns"] + _ns(wait)
    if not state["tombstone"]:
        return state["closed_at_ns"] + _ns(cfg.reopen_window_s)
    if cfg.tombstone_ttl_s is None:
        return None
    return state["closed_at_ns"] + _ns(cfg.tombstone_ttl_s)


def open_turns(state: State | None) -> list[Turn]:
    """The turns of the session as it stands, in turn order (for judging a session while it runs).
    Empty for a tombstone; a closed session within its reopen window still has its turns."""
    if state is None:
        return []
    return [Turn.model_validate(t) for t in _ordered(state)]


def _fresh(state: State | None, turns: list[Turn]) -> list[Turn]:
    newest: dict[str, Turn] = {}
    for turn in turns:
        if turn.trace_id not in newest or turn.trace_version > newest[turn.trace_id].trace_version:
            newest[turn.trace_id] = turn
    if state is None:
        return list(newest.values())
    return [t for t in newest.values() if t.trace_version > _known_version(state, t.trace_id)]


def _known_version(state: State, trace_id: str) -> int:
    turn = state["turns"].get(trace_id)
    return max(turn["trace_version"] if turn else 0, state["seen"].get(trace_id, 0))


def _ordered_items(state: State) -> list[tuple[str, dict[str, Any]]]:
    return sorted(state["turns"].items(), key=lambda kv: (kv[1]["started_ns"], kv[0]))


def _ordered(state: State) -> list[dict[str, Any]]:
    return [t for _, t in _ordered_items(state)]


def _ends(state: State) -> bool:
    """The latest turn, in turn order, carries the end marker."""
    ordered = _ordered(state)
    return bool(ordered) and bool(ordered[-1]["ends_session"])


def _close(state: State, reason: SessionCloseReason, now_ns: int) -> Session:
    state["open"] = False
    state["closed_at_ns"] = now_ns
    turns = [Turn.model_validate(t) for t in _ordered(state)]
    incomplete = any(t.status != TraceStatus.COMPLETE for t in turns)
    return _session(state, turns, SessionStatus.INCOMPLETE if incomplete else SessionStatus.COMPLETE, reason, now_ns)


def _session(state: State, turns: list[Turn], status: SessionStatus, reason: SessionCloseReason | None,
             now_ns: int, finished_rules: list[str] | None = None) -> Session:
    return Session(
        session_id=state["session_id"],
        version=state["version"],
        project=turns[0].project if turns else "default",
        status=status,
        close_reason=reason,
        started_ns=min((t.started_ns for t in turns), default=0),
        ended_ns=max((t.ended_ns for t in turns), default=0),
        closed_at_ns=now_ns,
        turns=turns,
        finished_rules=finished_rules or [],
    )


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)
