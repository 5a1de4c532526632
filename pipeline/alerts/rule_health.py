"""The built-in rule-health alert: one incident per eval rule that stops working. Pure: a rule's health
(`rules/health.py`) and the clock in, the incident's new state and the messages to send out.

    a rule turns erroring or starved   -> one `firing` message naming the state and the reason
    it stays erroring / starved        -> nothing (backlogged in between keeps the incident open)
    it is healthy or idle again        -> one `resolved` message; the incident is closed

Cooldown: at most one firing per rule per `cooldown_s`. A rule that breaks again sooner (flapping) is held
until the cooldown ends, and fires then only if it is still broken; if it recovers meanwhile nothing is sent.

The state of every rule is rebuilt from the `alerts` table at start (`incidents_sql`, `incidents_from_rows`):
the newest stored message of this alert per rule says whether its incident is open, and the newest firing
when the cooldown ends. So a restart neither re-fires an open incident nor forgets to resolve it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.contracts import Alert, AlertKind, AlertLevel
from pipeline.rules.health import HealthState

__all__ = [
    "FIRING_STATES",
    "RESOLVING_STATES",
    "RULE_HEALTH_ALERT",
    "HealthNotice",
    "RuleIncident",
    "incidents_from_rows",
    "incidents_sql",
    "render_health",
    "step",
]

RULE_HEALTH_ALERT = "evalstream:rule-health"  # its `alert_rule`; ':' is not allowed in a rules file's names
FIRING_STATES = frozenset({HealthState.ERRORING, HealthState.STARVED})
RESOLVING_STATES = frozenset({HealthState.HEALTHY, HealthState.IDLE})


@dataclass
class RuleIncident:
    """What the alert remembers of one rule."""

    rule: str
    open: bool = False
    incident_id: str = ""
    started: float = 0.0  # when the rule turned bad (the open incident's start)
    state: str = ""  # the health state it fired with
    reason: str = ""
    last_fired: float | None = None  # the last firing message: the cooldown runs from it
    bad_since: float | None = None  # bad, not (yet) fired: held by the cooldown
    thread: dict[str, str] = field(default_factory=dict)  # channel -> Slack ts of the firing message


@dataclass(frozen=True)
class HealthNotice:
    kind: AlertKind  # FIRING or RESOLVED
    rule: str
    incident_id: str
    incident_started: float
    at: float
    state: str  # the rule's health state now
    reason: str
    scorer: str | None = None
    failures: int = 1  # errors in the window (erroring), else 1
    thread: dict[str, str] = field(default_factory=dict)

    @property
    def notice_id(self) -> str:
        return _hash(f"{self.incident_id}\x00{self.kind.value}")


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def step(inc: RuleIncident, state: HealthState | str, reason: str, now: float, cooldown_s: float, *,
         scorer: str | None = None, failures: int = 1) -> list[HealthNotice]:
    """Advance one rule's incident by one health reading; `inc` is updated in place."""
    state = HealthState(state)
    if inc.open:
        if state not in RESOLVING_STATES:  # still broken, or backlogged: the incident stays open, quietly
            return []
        inc.open, inc.bad_since = False, None
        return [HealthNotice(AlertKind.RESOLVED, inc.rule, inc.incident_id, inc.started, now, state.value, reason,
                             scorer=scorer, failures=failures, thread=dict(inc.thread))]
    if state not in FIRING_STATES:
        inc.bad_since = None
        return []
    if inc.bad_since is None:
        inc.bad_since = now
    if inc.last_fired is not None and now - inc.last_fired < cooldown_s:
        return []  # held: fires when the cooldown ends, if still broken
    inc.open, inc.started, inc.last_fired = True, inc.bad_since, now
    inc.incident_id = _hash(f"{RULE_HEALTH_ALERT}\x00{inc.rule}\x00{inc.started:.6f}")
    inc.state, inc.reason, inc.thread = state.value, reason, {}
    return [HealthNotice(AlertKind.FIRING, inc.rule, inc.incident_id, inc.started, now, state.value, reason,
                         scorer=scorer, failures=failures)]


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def render_health(notice: HealthNotice, *, channel: str, fired_reason: str = "", now_ns: int | None = None) -> Alert:
    """The stored and sent message. `fired_reason`: for a resolved message, what the incident fired with."""
    if notice.kind == AlertKind.RESOLVED:
        title = (f"RESOLVED [{RULE_HEALTH_ALERT}] rule {notice.rule} is {notice.state} again after "
                 f"{_duration(notice.at - notice.incident_started)}")
        lines = [f"rule {notice.rule} is {notice.state}: {notice.reason}"]
        if fired_reason:
            lines.append(f"it was: {fired_reason}")
    else:
        title = f"CRITICAL [{RULE_HEALTH_ALERT}] rule {notice.rule} is {notice.state}: {notice.reason}"
        since = time.strftime("%H:%M:%S", time.gmtime(notice.incident_started))
        lines = [f"rule {notice.rule} is {notice.state} (since {since} UTC): {notice.reason}",
                 "`evalstream rules status` shows every rule; EVALSTREAM_RULE_HEALTH_ALERTS=false turns this alert off"]
    return Alert(
        alert_id=notice.notice_id, incident_id=notice.incident_id, alert_rule=RULE_HEALTH_ALERT, kind=notice.kind,
        level=AlertLevel.CRITICAL if notice.kind == AlertKind.FIRING else None, rule=notice.rule,
        scorer=notice.scorer, group={"state": notice.state}, title=title[:300], text="\n".join(lines),
        failures=max(0, notice.failures), incident_started_ns=int(notice.incident_started * 1e9),
        fired_at_ns=now_ns or time.time_ns(), thread=dict(notice.thread), channel=channel,
    )


def incidents_sql(db: str) -> str:
    """The newest stored message of this alert per rule, and its newest firing."""
    return (
        "SELECT rule, argMax(kind, fired_at) AS last_kind, argMax(incident_id, fired_at) AS incident_id, "
        "toUnixTimestamp64Micro(argMax(ifNull(incident_started, fired_at), fired_at)) / 1e6 AS started, "
        "toUnixTimestamp64Micro(maxIf(fired_at, kind = 'firing')) / 1e6 AS last_fired, "
        "argMax(group_values['state'], fired_at) AS state, argMax(text, fired_at) AS text, "
        "argMax(thread_ts, fired_at) AS thread "
        f"FROM {db}.alerts FINAL WHERE alert_rule = '{RULE_HEALTH_ALERT}' GROUP BY rule")


def _thread(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def incidents_from_rows(rows: Iterable[Sequence[Any]]) -> dict[str, RuleIncident]:
    out: dict[str, RuleIncident] = {}
    for rule, last_kind, incident_id, started, last_fired, state, text, thread in rows:
        is_open = last_kind == AlertKind.FIRING.value
        reason = str(text).split("\n", 1)[0].split(": ", 1)[-1] if is_open else ""
        out[str(rule)] = RuleIncident(
            rule=str(rule), open=is_open, incident_id=str(incident_id) if is_open else "",
            started=float(started or 0), state=str(state) if is_open else "", reason=reason,
            last_fired=float(last_fired) if last_fired and float(last_fired) > 0 else None,
            thread=_thread(str(thread or "")) if is_open else {})
    return out
