"""The life of one trace's assembly state.

State is a plain dict (it lives in a Faust table and its changelog):

    trace_id, partition, version, open (bool), spans {span_id: span dict},
    root_ended, final, first_seen_s, last_seen_s, closed_at_s,
    calls {span_id: seen_at_s}: remote calls no span of the callee has answered yet,
    waited [{span_id, name, answered, waited_s}]: the calls this version waited for (shown by `why`),
    reopened_by {span_id, name, late_by_s}: the late span that re-opened it, if any,
    needs_history / history_checked: a first version closing without a root may continue a trace whose
    state is gone; the assembler asks storage for its highest version first (`continue_stored`),
    span_ids, stored_spans_of: a closed state kept compact (`compact`) holds only its span ids; a late span
    re-opens it with `stored_spans_of` = the closed version, whose spans are read back from storage before
    the new version closes, so that it is whole

open --(root ended, every remote call answered or waited remote_wait_s, quiet for quiet_period_s
        | the root's sender said `final`)--> closed, emitted as `complete`
open --(no span for idle_timeout_s, root never ended)--> closed, emitted as `incomplete`
closed --(a new span id)--> open again with version + 1 (re-emitted, re-scored)
closed --(reopen_window_s passed)--> forgotten
A span id already seen counts once, whenever it arrives. `final` means "nothing more from me": it closes
the trace at once only when no remote call the trace made is still waiting for the callee's spans.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pipeline.assembly.remote import is_call
from pipeline.contracts import CloseReason, TraceStatus

if TYPE_CHECKING:
    from pipeline.settings import Settings

State = dict[str, Any]


@dataclass(frozen=True)
class AssemblyConfig:
    quiet_period_s: float = 2.0
    idle_timeout_s: float = 300.0
    reopen_window_s: float = 900.0
    remote_wait_s: float = 10.0  # how long a remote call waits for the callee's spans (OTel's exporter: 5 s)

    @classmethod
    def from_settings(cls, settings: Settings) -> AssemblyConfig:
        return cls(settings.quiet_period_s, settings.idle_timeout_s, settings.reopen_window_s, settings.remote_wait_s)


MAX_WAITED = 20  # calls listed per version in `waited` (the rest are counted, not named)


@dataclass(frozen=True)
class MergeOutcome:
    added: int
    duplicates: int
    reopened: bool
    created: bool
    answered: tuple[dict[str, Any], ...] = ()  # call spans a span of their callee answered in this merge


class DueAction(StrEnum):
    CLOSE_COMPLETE = "close_complete"
    CLOSE_FINAL = "close_final"
    CLOSE_INCOMPLETE = "close_incomplete"
    CLOSE_REMOTE_WAIT = "close_remote_wait"  # complete, but a remote call went unanswered for remote_wait_s
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
    state: State | None, trace_id: str, partition: int, spans: list[dict[str, Any]], final: bool, now: float,
    expects_answer: Callable[[dict[str, Any]], bool] = is_call,
) -> tuple[State, MergeOutcome]:
    """Add spans (already validated) to the state; returns the new state and what happened.
    `expects_answer(span)` says whether a span is a remote call worth waiting for."""
    created = state is None
    if state is None:
        state = new_state(trace_id, partition, now)
    known: dict[str, Any] = state["spans"]
    closed_ids = set(state.get("span_ids", ()))  # a compact state's spans, stored
    fresh = list({s["span_id"]: s for s in spans if s["span_id"] not in known and s["span_id"] not in closed_ids
                  }.values())
    duplicates = len(spans) - len(fresh)
    reopened = False
    if fresh and not state["open"]:
        late = min(fresh, key=lambda s: s["start_ns"])
        state["reopened_by"] = {"span_id": late["span_id"], "name": late.get("name", ""),
                                "late_by_s": round(now - state["closed_at_s"], 3)}
        if closed_ids:  # its spans are in storage: read them back before this version closes
            state["stored_spans_of"] = state["version"]
        state["open"] = True
        state["version"] += 1
        state["closed_at_s"] = None
        state["waited"] = []
        reopened = True
    calls: dict[str, float] = state.setdefault("calls", {})
    answered: list[dict[str, Any]] = []
    for span in fresh:
        known[span["span_id"]] = span
        if not span.get("parent_span_id"):
            state["root_ended"] = True
            if span.get("spans_still_open") and not final:  # work outlives the root: wait for the sender's final
                state["awaiting_final_s"] = now
        parent = span.get("parent_span_id")
        if parent in calls:
            _note_waited(state, known[parent], True, now - calls.pop(parent))
            answered.append(known[parent])
    for span in fresh:
        if expects_answer(span) and not any(s.get("parent_span_id") == span["span_id"] for s in known.values()):
            calls[span["span_id"]] = now
    if fresh:
        state["last_seen_s"] = now
    if final and state["open"]:  # only the root's process sends it: nothing more will come from there
        state["final"] = True
        state.pop("awaiting_final_s", None)
    return state, MergeOutcome(added=len(fresh), duplicates=duplicates, reopened=reopened, created=created,
                               answered=tuple(answered))


def _note_waited(state: State, call: dict[str, Any], answered: bool, waited_s: float) -> None:
    waited = state.setdefault("waited", [])
    if len(waited) < MAX_WAITED:
        waited.append({"span_id": call["span_id"], "name": call.get("name", ""), "answered": answered,
                       "waited_s": round(waited_s, 3)})


def continue_stored(state: State, stored: dict[str, Any] | None, now: float) -> None:
    """A first version whose trace may have been assembled before (its state is gone: a broker restart, or the
    reopen window passed) goes on from the stored highest version + 1, with the stored spans it lacks, so a
    stored version is never rewritten and the new one is whole. `stored` is that version (a `Trace` dict),
    or None when storage has none."""
    state.pop("needs_history", None)
    state.pop("stored_spans_of", None)
    state.pop("stored_tries", None)
    state["history_checked"] = True
    if stored is None:
        return
    known: dict[str, Any] = state["spans"]
    late = min(known.values(), key=lambda s: s["start_ns"]) if known else None
    for span in stored.get("spans", []):
        if span["span_id"] not in known:
            known[span["span_id"]] = span
            if not span.get("parent_span_id"):
                state["root_ended"] = True
    state["version"] = int(stored["version"]) + 1
    if late is not None:
        closed_s = (stored.get("closed_at_ns") or 0) / 1e9
        state["reopened_by"] = {"span_id": late["span_id"], "name": late.get("name", ""),
                                "late_by_s": round(max(0.0, now - closed_s), 3)}


def needs_history(state: State, action: DueAction | None) -> bool:
    """Whether to ask storage for the trace's highest version before closing it: for a version re-opened from
    a compact state (its earlier spans are stored), and for a first version that closes without a root, which
    is what late spans of a trace whose state is gone look like (the reopen window passed, or the broker lost
    the assembly changelog). Both are rare, so this costs little."""
    if state.get("stored_spans_of"):
        return action is not None and action != DueAction.FORGET
    if state.get("history_checked") or state["version"] != 1:
        return False
    return bool(state.get("needs_history")) or action == DueAction.CLOSE_INCOMPLETE


def stored_in_time(state: State, stored: dict[str, Any] | None) -> bool:
    """Whether storage has what a re-opened compact state needs: the version it closed as, or a later one."""
    wanted = state.get("stored_spans_of")
    return not wanted or (stored is not None and int(stored["version"]) >= wanted)


def compact(state: State) -> None:
    """A closed state keeps its span ids, not its spans: they are stored, and a version a late span re-opens
    reads them back (`stored_spans_of`). What the changelog keeps per closed trace is then a few hundred
    bytes rather than the whole trace."""
    state["span_ids"] = list(dict.fromkeys([*state.get("span_ids", ()), *state["spans"]]))
    state["spans"] = {}
    state.pop("waited", None)
    state.pop("calls", None)


def pending_calls(state: State) -> list[dict[str, Any]]:
    """The remote calls still waiting for an answer."""
    return [state["spans"][span_id] for span_id in state.get("calls", {}) if span_id in state["spans"]]


def deadline(state: State, cfg: AssemblyConfig) -> float:
    """When this state next needs attention."""
    if not state["open"]:
        return state["closed_at_s"] + cfg.reopen_window_s
    if not state["root_ended"]:
        return state["last_seen_s"] + cfg.idle_timeout_s
    at = state["last_seen_s"] if state["final"] else state["last_seen_s"] + cfg.quiet_period_s
    calls = state.get("calls")
    if calls:  # not before every call was answered, or has waited remote_wait_s
        at = max(at, max(calls.values()) + cfg.remote_wait_s)
    if "awaiting_final_s" in state:  # nor before the root's process said it is done, or remote_wait_s passed
        at = max(at, state["awaiting_final_s"] + cfg.remote_wait_s)
    return at


def due_action(state: State, now: float, cfg: AssemblyConfig) -> DueAction | None:
    if now < deadline(state, cfg):
        return None
    if not state["open"]:
        return DueAction.FORGET
    if not state["root_ended"]:
        return DueAction.CLOSE_INCOMPLETE
    if state.get("calls"):
        return DueAction.CLOSE_REMOTE_WAIT
    if state["final"]:
        return DueAction.CLOSE_FINAL
    return DueAction.CLOSE_COMPLETE


_CLOSE = {
    DueAction.CLOSE_COMPLETE: (TraceStatus.COMPLETE, CloseReason.QUIET),
    DueAction.CLOSE_FINAL: (TraceStatus.COMPLETE, CloseReason.FINAL),
    DueAction.CLOSE_INCOMPLETE: (TraceStatus.INCOMPLETE, CloseReason.IDLE),
    DueAction.CLOSE_REMOTE_WAIT: (TraceStatus.COMPLETE, CloseReason.REMOTE_WAIT),
}


def close_trace(state: State, action: DueAction, now: float) -> dict[str, Any]:
    """Mark the state closed and return the Trace payload (a dict matching `Trace`)."""
    status, reason = _CLOSE[action]
    for call in pending_calls(state):  # unanswered: the callee sent nothing in time (or is not instrumented)
        _note_waited(state, call, False, now - state["calls"][call["span_id"]])
    state["calls"] = {}
    state.pop("awaiting_final_s", None)
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
        "waited_for": list(state.get("waited", [])),
        "reopened_by": state.get("reopened_by"),
        "spans": spans,
    }
