"""JSON lines between a worker and one sandbox process: one object per line, both directions.

    parent -> child   {"op": "score", "id": 7, "params": {...}, "target": {"kind": "trace"|"example", "data": {...}}}
                      a span rule's job: "target": {"kind": "span", "span_id": "...", "data": {the trace}}
    child -> parent   {"op": "ready", "pid": 123, "uid": 999, "name": "...", "scorer_version": "1"}  once
                      {"op": "load_error", "error_type": "...", "message": "..."}           then exits 1
                      {"op": "result", "id": 7, "score": {...}, "threshold": 0.5, "higher_is_better": true,
                       "cpu_s": 1.2}
                      {"op": "error", "id": 7, "error_type": "ValueError", "message": "...", "retryable": false,
                       "cpu_s": 1.2}

The parent closes stdin to ask the child to finish its jobs and exit. The child's stdout carries
only this protocol; whatever the scorer prints goes to stderr, which the worker logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.contracts import Example, SpanSubject, Trace
from scorers.base import Score, ScoreTarget

SCORE = "score"
READY = "ready"
LOAD_ERROR = "load_error"
RESULT = "result"
ERROR = "error"


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

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ScoreReply:
        threshold = message.get("threshold")
        return cls(
            score=Score.model_validate(message["score"]),
            threshold=float(threshold) if isinstance(threshold, int | float) else None,
            higher_is_better=bool(message.get("higher_is_better", True)),
            cpu_s=float(message.get("cpu_s") or 0.0),
        )
