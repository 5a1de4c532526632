"""`evalstream rules status` (and the rules part of `evalstream status`): rule health as a table, or as JSON."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.text import Text

from pipeline.rules.health import HealthState, RuleHealth
from pipeline.views.tables import print_table

__all__ = ["HEADERS", "health_json", "print_rule_health", "rule_rows"]

HEADERS = ["rule", "state", "matched", "sampled", "scored", "failed", "errored", "deferred", "last score", "reason"]
STYLES = {HealthState.HEALTHY: "green", HealthState.ERRORING: "bold red", HealthState.STARVED: "bold red",
          HealthState.BACKLOGGED: "yellow", HealthState.IDLE: "dim"}


def ago(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    seconds = max(0.0, now - at)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def rule_rows(health: list[RuleHealth], now: float) -> list[list[str | Text]]:
    rows: list[list[str | Text]] = []
    for h in health:
        f = h.figures
        rows.append([h.rule, Text(h.state.value, style=STYLES[h.state]), str(f.matched), str(f.sampled),
                     str(f.scored), str(f.failed), str(f.errored), str(f.deferred), ago(f.last_score_at, now),
                     h.reason])
    return rows


def print_rule_health(console: Console, health: list[RuleHealth], now: float, title: str | None = None) -> None:
    if not health:
        console.print("No rules: no rules file given and no rule decided anything in the window.")
        return
    print_table(console, HEADERS, rule_rows(health, now), fold=["rule", "reason"], title=title)


def _iso(at: float | None) -> str | None:
    return None if at is None else dt.datetime.fromtimestamp(at, dt.UTC).isoformat()


def health_json(health: list[RuleHealth]) -> list[dict[str, Any]]:
    out = []
    for h in health:
        f = h.figures
        out.append({
            "rule": h.rule, "state": h.state.value, "reason": h.reason, "scorer": h.scorer,
            "in_rules_file": h.in_rules_file, "matched": f.matched, "filtered_out": f.filtered_out,
            "sampled": f.sampled, "scored": f.scored, "failed": f.failed, "errored": f.errored,
            "deferred": f.deferred, "waiting": f.waiting, "deferred_waiting": f.deferred_waiting,
            "oldest_waiting_at": _iso(f.oldest_waiting_at), "last_decision_at": _iso(f.last_decision_at),
            "last_result_at": _iso(f.last_result_at), "last_score_at": _iso(f.last_score_at),
            "recent": {"results": f.recent_results, "errors": f.recent_errors, "queued": f.recent_queued},
            "last_error": {"type": f.last_error_type, "message": f.last_error_message} if f.last_error_type else None,
        })
    return out
