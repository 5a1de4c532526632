"""The life of one trace's assembly state.

State is a plain dict (it lives in a Faust table and its changelog):

    trace_id, partition, version, open (bool), spans {span_id: span dict},
    root_ended, final, first_seen_s, last_seen_s, closed_at_s

open --(root ended, quiet for quiet_period_s | final marker)--> closed, emitted as `complete`
open --(no span for idle_timeout_s, root never ended)--------> closed, emitted as `incomplete`
closed --(a new span id)--> open again with version + 1 (re-emitted, re-scored)
closed --(reopen_window_s passed)--> forgotten
A span id already seen counts once, whenever it arrives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.contracts import CloseReason, TraceStatus

State = dict[str, Any]


@dataclass(frozen=True)
class AssemblyConfig:
    quiet_period_s: float = 2.0
    idle_timeout_s: float = 300.0
    reopen_window_s: float = 900.0


@dataclass(frozen=True)
class MergeOutcome:
    added: int
    duplicates: int
    reopened: bool
    created: bool


class DueAction(StrEnum):
    CLOSE_COMPLETE = "close_complete"
    CLOSE_FINAL = "close_final"
    CLOSE_INCOMPLETE = "close_incomplete"
    FORGET = "forget"


def new_state(trace_id: str, partition: int, now: float) -> State:
    return {
        "trace_id": trace_id,
        "partition": partition,
        "version": 1,
        "open": True,
        "spans": {},
        "root_ended": False,
        "final": False,
        "first_seen_s": now,
        "last_seen_s": now,
        "closed_at_s": None,
    }


def merge_spans(
    state: State | None, trace_id: str, partition: int, spans: list[dict[str, Any]], final: bool, now: float
) -> tuple[State, MergeOutcome]:
    """Add spans (already validated) to the state; returns the new state and what happened."""
    created = state is None
    if state is None:
        state = new_state(trace_id, partition, now)
    known: dict[str, Any] = state["spans"]
    fresh = list({s["span_id"]: s for s in spans if s["span_id"] not in known}.values())
    duplicates = len(spans) - len(fresh)
    reopened = False
    if fresh and not state["open"]:
        state["open"] = True
        state["version"] += 1
        state["closed_at_s"] = None
        reopened = True
    for span in fresh:
        known[span["span_id"]] = span
        if not span.get("parent_span_id"):
            state["root_ended"] = True
    if fresh:
        state["last_seen_s"] = now
    if final and state["open"]:
        state["final"] = True
    return state, MergeOutcome(added=len(fresh), duplicates=duplicates, reopened=reopened, created=created)


def deadline(state: State, cfg: AssemblyConfig) -> float:
    """When this state next needs attention."""
    if not state["open"]:
        return state["closed_at_s"] + cfg.reopen_window_s
    if state["final"]:
        return state["last_seen_s"]
    if state["root_ended"]:
        return state["last_seen_s"] + cfg.quiet_period_s
    return state["last_seen_s"] + cfg.idle_timeout_s


def due_action(state: State, now: float, cfg: AssemblyConfig) -> DueAction | None:
    if now < deadline(state, cfg):
        return None
    if not state["open"]:
        return DueAction.FORGET
    if state["final"]:
        return DueAction.CLOSE_FINAL
    if state["root_ended"]:
        return DueAction.CLOSE_COMPLETE
    return DueAction.CLOSE_INCOMPLETE


_CLOSE = {
    DueAction.CLOSE_COMPLETE: (TraceStatus.COMPLETE, CloseReason.QUIET),
    DueAction.CLOSE_FINAL: (TraceStatus.COMPLETE, CloseReason.FINAL),
    DueAction.CLOSE_INCOMPLETE: (TraceStatus.INCOMPLETE, CloseReason.IDLE),
}


def close_trace(state: State, action: DueAction, now: float) -> dict[str, Any]:
    """Mark the state closed and return the Trace payload (a dict matching `Trace`)."""
    status, reason = _CLOSE[action]
    state["open"] = False
    state["final"] = False
    state["closed_at_s"] = now
    spans = sorted(state["spans"].values(), key=lambda s: (s["start_ns"], s["span_id"]))
    roots = [s for s in spans if not s.get("parent_span_id")]
    root = roots[0] if roots else None
    return {
        "v": 1,
        "trace_id": state["trace_id"],
        "version": state["version"],
        "project": (root or spans[0]).get("project", "default") if spans else "default",
        "status": status.value,
        "close_reason": reason.value,
        "root_span_id": root["span_id"] if root else None,
        "name": root["name"] if root else None,
        "start_ns": min((s["start_ns"] for s in spans), default=0),
        "end_ns": max((s["end_ns"] for s in spans), default=0),
        "closed_at_ns": time.time_ns(),
        "spans": spans,
    }
