"""The incident state machine of one (alert rule, group). Pure: state in, state and notices out.

Windows are aligned to the clock (`floor(t / window_s) * window_s`), half-open `[start, end)`, and
counted in event time (the results' `scored_at`). A window breaches at a level when its count (or
failure rate, given `min_samples` results) reaches that level's threshold; the group *fires* once
`sustained` consecutive windows breach, the last of them possibly still open, so a firing goes out
the moment the threshold is crossed rather than when the window ends.

While an incident is open, every later match is *held* and reported in exactly one later message:
a digest when the cooldown after the previous message has passed, an escalation, or the resolution.
Nothing is dropped. The incident *resolves* when a whole window closes without breach (a window with
no results at all included). Windows close when an event of a later window arrives, or when the wall
clock minus a grace period passes their end (ticks), so a silent group still resolves.

State is a JSON-able dict, because it lives in a Faust table (restored after a restart).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.contracts import AlertKind, AlertObservation
from pipeline.rules.model import AlertRule, Levels

MAX_SHOWN = 10  # traces named in one message
MAX_HELD = 1000  # trace ids kept for a digest; its count stays exact beyond this

State = dict[str, Any]


@dataclass(frozen=True)
class Reading:
    level: int  # 0 ok, 1 warning, 2 critical
    observed: float  # the window's count, or its failure rate
    threshold: float | None  # the threshold of `level` (of warning/critical when ok)
    matches: int
    samples: int


@dataclass(frozen=True)
class Notice:
    """A message the state machine decided to send; `pipeline.alerts.message` renders it."""

    kind: AlertKind
    level: int
    incident_id: str
    incident_started: float
    at: float  # event time of what caused it (wall time for tick-driven messages)
    failures: int
    suppressed: int = 0
    reading: Reading | None = None
    window_start: float | None = None
    traces: list[tuple[str, str]] = field(default_factory=list)  # (trace id, reason), the ones shown
    trace_ids: list[str] = field(default_factory=list)  # every trace the message reports
    seq: int = 0
    thread: dict[str, str] = field(default_factory=dict)

    @property
    def notice_id(self) -> str:
        return _hash(f"{self.incident_id}\x00{self.kind.value}\x00{self.seq}")


def read(levels: Levels, matches: int, samples: int) -> Reading:
    if levels.measure == "rate":
        observed = matches / samples if samples else 0.0
        enough = samples >= levels.min_samples
    else:
        observed, enough = float(matches), True
    if enough and observed >= levels.critical:
        return Reading(2, observed, levels.critical, matches, samples)
    if enough and levels.warning is not None and observed >= levels.warning:
        return Reading(1, observed, levels.warning, matches, samples)
    return Reading(0, observed, levels.warning if levels.warning is not None else levels.critical, matches, samples)


def window_start(t: float, window_s: float) -> float:
    return math.floor(t / window_s) * window_s


def new_state(group: dict[str, str], partition: int) -> State:
    return {"p": partition, "group": group, "win": None, "hist": [], "hist_end": None, "level": 0,
            "inc": None, "held": None, "last_sent": None, "seq": 0}


def observe(state: State, alert: AlertRule, obs: AlertObservation, wall_now: float) -> list[Notice]:
    """Count one result into its window; returns what to send (mutates `state`)."""
    t = obs.scored_at_ns / 1e9
    notices = advance(state, alert, watermark=t, wall_now=wall_now, send_digest=False)
    w = alert.window_s
    win = state["win"]
    if win is None:
        start = window_start(t, w)
        if state["hist_end"] is not None:
            start = max(start, state["hist_end"])  # late for a closed window: counts in the next one
            _note_gap(state, alert, start)
        win = state["win"] = {"start": start, "n": 0, "total": 0, "traces": []}
    win["total"] += 1
    if obs.matched:
        win["n"] += 1
        win["traces"] = (win["traces"] + [[obs.trace_id, obs.reason]])[-MAX_SHOWN:]
        if state["level"] > 0:
            _hold(state, obs, t)
    reading = read(alert.levels, win["n"], win["total"])
    target = _breach_level(state, alert, reading.level)
    if target > state["level"]:
        notices.append(_raise_to(state, target, reading, t, wall_now, alert))
    elif obs.matched and state["level"] > 0 and _cooled_down(state, alert, wall_now):
        notices.append(_with_held(state, AlertKind.DIGEST, t, wall_now, reading))
    return notices


def advance(state: State, alert: AlertRule, *, watermark: float, wall_now: float,
            send_digest: bool = True) -> list[Notice]:
    """Close every window that ended at or before `watermark`; send a due digest."""
    w = alert.window_s
    notices: list[Notice] = []
    while True:
        win = state["win"]
        if win is not None and win["start"] + w <= watermark:
            notices += _close(state, alert, win["start"], read(alert.levels, win["n"], win["total"]), wall_now)
        elif win is None and (state["level"] > 0 or any(state["hist"])) and state["hist_end"] is not None \
                and state["hist_end"] + w <= watermark:
            # a window with no results: it resolves an incident, and ends a `sustained` run (so the key can go)
            notices += _close(state, alert, state["hist_end"], read(alert.levels, 0, 0), wall_now)
        else:
            break
    if send_digest and state["level"] > 0 and state["held"] and _cooled_down(state, alert, wall_now):
        notices.append(_with_held(state, AlertKind.DIGEST, wall_now, wall_now, None))
    return notices


def is_idle(state: State) -> bool:
    """Nothing open, nothing held, no history that a `sustained` count depends on: the key can go."""
    return state["level"] == 0 and state["win"] is None and not state["held"] and not any(state["hist"])


def _close(state: State, alert: AlertRule, start: float, reading: Reading, wall_now: float) -> list[Notice]:
    need = alert.sustained - 1
    state["hist"] = (state["hist"] + [reading.level])[-need:] if need else []
    state["hist_end"] = start + alert.window_s
    state["win"] = None
    fired_in_this_window = state["inc"] is not None and state["inc"].get("window") == start
    if state["level"] > 0 and reading.level == 0 and not fired_in_this_window:
        # (a rate that fired early in a window and ended it lower resolves on the next clean window, not
        # on the one it fired in: otherwise a noisy rule fires and resolves every window)
        notice = _with_held(state, AlertKind.RESOLVED, state["hist_end"], wall_now, reading, window=start)
        state["level"], state["inc"] = 0, None
        return [notice]
    return []


def _note_gap(state: State, alert: AlertRule, start: float) -> None:
    """Windows that passed with no result at all did not breach: a `sustained` run starts again."""
    need = alert.sustained - 1
    if need and state["hist_end"] is not None and start > state["hist_end"]:
        skipped = round((start - state["hist_end"]) / alert.window_s)
        state["hist"] = (state["hist"] + [0] * min(skipped, need))[-need:]


def _breach_level(state: State, alert: AlertRule, current: int) -> int:
    need = alert.sustained - 1
    earlier = state["hist"][-need:] if need else []
    if len(earlier) < need:
        return 0
    for level in (2, 1):
        if current >= level and all(h >= level for h in earlier):
            return level
    return 0


def _hold(state: State, obs: AlertObservation, t: float) -> None:
    held = state["held"] or {"n": 0, "traces": [], "first": t, "last": t}
    held["n"] += 1
    held["first"], held["last"] = min(held["first"], t), max(held["last"], t)
    if len(held["traces"]) < MAX_HELD:  # reasons only for the ones a message shows: the state stays small
        held["traces"].append([obs.trace_id, obs.reason if len(held["traces"]) < MAX_SHOWN else ""])
    state["held"] = held
    if state["inc"] is not None:
        state["inc"]["n"] += 1


def _cooled_down(state: State, alert: AlertRule, wall_now: float) -> bool:
    return state["last_sent"] is None or wall_now >= state["last_sent"] + alert.cooldown_s


def _raise_to(state: State, target: int, reading: Reading, t: float, wall_now: float, alert: AlertRule) -> Notice:
    win = state["win"]
    if state["level"] == 0:
        key = f"{alert.name}\x00{sorted(state['group'].items())}\x00{t}"
        state["inc"] = {"id": _hash(key), "since": t, "n": win["n"], "thread": {}, "window": win["start"]}
        state["held"] = None
        state["level"] = target
        return _notice(state, AlertKind.FIRING, t, wall_now, reading, failures=win["n"],
                       traces=[tuple(x) for x in win["traces"]], window=win["start"])
    state["level"] = target
    return _with_held(state, AlertKind.ESCALATED, t, wall_now, reading)


def _with_held(state: State, kind: AlertKind, t: float, wall_now: float, reading: Reading | None,
               window: float | None = None) -> Notice:
    """A message that reports (and clears) what was held since the previous one."""
    held = state["held"] or {"n": 0, "traces": []}
    state["held"] = None
    traces = [tuple(x) for x in held["traces"]]
    failures = state["inc"]["n"] if kind == AlertKind.RESOLVED else (reading.matches if reading and kind ==
                                                                        AlertKind.ESCALATED else held["n"])
    win = state["win"]
    return _notice(state, kind, t, wall_now, reading, failures=failures, traces=traces, suppressed=held["n"],
                   window=window if window is not None else (win["start"] if win else None))


def _notice(state: State, kind: AlertKind, t: float, wall_now: float, reading: Reading | None, *, failures: int,
            traces: list[tuple[str, str]], suppressed: int = 0, window: float | None = None) -> Notice:
    inc = state["inc"]
    state["seq"] += 1
    state["last_sent"] = wall_now
    return Notice(kind=kind, level=state["level"], incident_id=inc["id"],
                  incident_started=inc["since"], at=t, failures=failures, suppressed=suppressed, reading=reading,
                  window_start=window, traces=traces[:MAX_SHOWN], trace_ids=[tr[0] for tr in traces],
                  seq=state["seq"], thread=dict(inc["thread"]))


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
