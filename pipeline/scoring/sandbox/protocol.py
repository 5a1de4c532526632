"""JSON lines between a worker and one sandbox process: one object per line, both directions.

    parent -> child   {"op": "score", "id": 7, "params": {...}, "target": {"kind": "trace"|"example", "data": {...}}}
                      a span rule's job: "target": {"kind": "span", "span_id": "...", "data": {the trace}}
    child -> parent   {"op": "ready", "pid": 123, "uid": 999, "name": "...", "scorer_version": "1"}  once
                      {"op": "load_error", "error_type": "...", "message": "..."}           then exits 1
                      {"op": "result", "id": 7, "score": {...}, "threshold": 0.5, "higher_is_better": true,
                       "cpu_s": 1.2, "activity": [{"kind": "call"|"tool", ...}], "activity_dropped": 0}
                      {"op": "error", "id": 7, "error_type": "ValueError", "message": "...", "retryable": false,
                       "cpu_s": 1.2}

`activity` is what the scorer's judges did (model calls, tool runs), for the job's evaluation trace: the
child records it as a worker does, and the parent hands it to the worker's recording. It comes from the
sandbox, so the parent parses it as untrusted: an entry of the wrong shape is only counted as dropped.

The parent closes stdin to ask the child to finish its jobs and exit. The child's stdout carries
only this protocol; whatever the scorer prints goes to stderr, which the worker logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.contracts import Example, SpanSubject, Trace
from scorers.base import Score, ScoreTarget
from scorers.judges.records import (
    JudgeActivity,
    JudgeCall,
    TraceToolCall,
    activity_from_wire,
    activity_to_wire,
)

SCORE = "score"
READY = "ready"
LOAD_ERROR = "load_error"
RESULT = "result"
ERROR = "error"

ACTIVITY_MAX_ENTRIES = 256  # judge calls and tool runs relayed per job (the evaluation trace's span cap)
ACTIVITY_TEXT_CHARS = 20_000  # each text relayed (the evaluation trace's cap)


def dumps(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message, default=str) + b"\n"


def loads(line: bytes) -> dict[str, Any]:
    message = orjson.loads(line)
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ValueError(f"not a protocol message: {line[:200]!r}")  # noqa: TRY004 - like a JSON error
    return message


def encode_target(target: ScoreTarget) -> dict[str, Any]:
    if isinstance(target, SpanSubject):
        return {"kind": "span", "span_id": target.span_id, "data": target.trace.model_dump(mode="json")}
    if not isinstance(target, Trace | Example):
        raise TypeError(f"an uploaded scorer scores a Trace, a SpanSubject or an Example, not "
                        f"{type(target).__name__}")
    kind = "trace" if isinstance(target, Trace) else "example"
    return {"kind": kind, "data": target.model_dump(mode="json")}


def decode_target(message: dict[str, Any]) -> ScoreTarget:
    if message.get("kind") == "span":
        return SpanSubject.of(Trace.model_validate(message["data"]), str(message["span_id"]))
    if message.get("kind") == "trace":
        return Trace.model_validate(message["data"])
    return Example.model_validate(message["data"])


def score_request(request_id: int, params: dict[str, Any], target: ScoreTarget) -> bytes:
    return dumps({"op": SCORE, "id": request_id, "params": params, "target": encode_target(target)})


@dataclass(frozen=True)
class ScoreReply:
    """A score from the sandbox, with what `Scorer.decide` needs from the scorer instance there."""

    score: Score
    threshold: float | None
    higher_is_better: bool
    cpu_s: float
    activity: tuple[JudgeCall | TraceToolCall, ...] = ()
    activity_dropped: int = 0

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ScoreReply:
        threshold = message.get("threshold")
        activity, dropped = parse_activity(message.get("activity"), message.get("activity_dropped"))
        return cls(
            score=Score.model_validate(message["score"]),
            threshold=float(threshold) if isinstance(threshold, int | float) else None,
            higher_is_better=bool(message.get("higher_is_better", True)),
            cpu_s=float(message.get("cpu_s") or 0.0),
            activity=activity,
            activity_dropped=dropped,
        )


def activity_fields(activity: JudgeActivity) -> dict[str, Any]:
    """The child's side: what its scorer's judges did, for the reply."""
    if not activity:
        return {}
    return {"activity": [activity_to_wire(e, ACTIVITY_TEXT_CHARS) for e in activity.entries[:ACTIVITY_MAX_ENTRIES]],
            "activity_dropped": activity.dropped + max(0, len(activity.entries) - ACTIVITY_MAX_ENTRIES)}


def parse_activity(entries: Any, dropped: Any) -> tuple[tuple[JudgeCall | TraceToolCall, ...], int]:
    """The parent's side: the entries that parse (at most ACTIVITY_MAX_ENTRIES), and how many did not arrive."""
    count = dropped if isinstance(dropped, int) and not isinstance(dropped, bool) and 0 <= dropped < 2**31 else 0
    if not isinstance(entries, list):
        return (), count
    parsed: list[JudgeCall | TraceToolCall] = []
    for wire in entries[:ACTIVITY_MAX_ENTRIES]:
        try:
            parsed.append(activity_from_wire(wire))
        except (TypeError, ValueError):
            count += 1
    return tuple(parsed), count + max(0, len(entries) - ACTIVITY_MAX_ENTRIES)
