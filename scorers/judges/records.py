"""What every judge call leaves behind, and the `metadata["judge"]` summary of one judgment.

`recording_judge_activity()` also collects, for whoever runs a job (the scorer worker), every model call
the judge client makes and every tool the judges run inside it, in order, whole: the scorer worker turns
them into the job's evaluation trace (`pipeline/scoring/evaluation_trace.py`). It is a context variable,
so concurrent jobs on one event loop each see their own, and a call outside any recording costs a lookup.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

# Each call's messages are kept whole in memory, but capped in the score's metadata: an agent judge resends
# its whole conversation on every step, so uncapped copies would grow with the square of the steps.
MESSAGE_CHARS_IN_METADATA = 2000


@dataclass(frozen=True)
class ToolCallRequest:
    """A tool call the judge model asked for: `arguments` is the raw JSON text it produced."""

    id: str
    name: str
    arguments: str


@dataclass
class RetryRecord:
    attempt: int
    error: str
    status: int | None
    wait_s: float
    retry_after_s: float | None


@dataclass
class JudgeCall:
    """One logical call to the judge model: all of its attempts, or a cache hit (then tokens and cost are 0)."""

    model: str
    messages: list[dict[str, Any]]
    tool_names: list[str]
    tool_choice: Any
    response_text: str | None = None
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    attempts: int = 0
    cached: bool = False
    retries: list[RetryRecord] = field(default_factory=list)
    error: str | None = None
    started_at: float = field(default_factory=time.time)

    def as_dict(self, max_message_chars: int = MESSAGE_CHARS_IN_METADATA) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [_capped_message(m, max_message_chars) for m in self.messages],
            "tools": self.tool_names,
            "tool_choice": self.tool_choice,
            "response_text": self.response_text,
            "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in self.tool_calls],
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "latency_ms": round(self.latency_ms, 3),
            "attempts": self.attempts,
            "cached": self.cached,
            "retries": [vars(r) for r in self.retries],
            "error": self.error,
        }


def _capped_message(message: dict[str, Any], limit: int) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str) and len(content) > limit:
        return {**message, "content": f"{content[:limit]}… [{len(content) - limit} more chars]"}
    return message


@dataclass
class TraceToolCall:
    """A trace tool the agent judge ran for the model. `result` (what the model was given) stays out of
    the metadata; the evaluation trace keeps it."""

    step: int
    name: str
    arguments: dict[str, Any]
    result_chars: int
    ms: float
    error: str | None = None
    result: str = ""
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "name": self.name, "arguments": self.arguments,
                "result_chars": self.result_chars, "ms": self.ms, "error": self.error}


@dataclass
class JudgmentLog:
    """The calls and tool runs of one judgment; `metadata()` is what lands in `Score.metadata["judge"]`."""

    model: str
    calls: list[JudgeCall] = field(default_factory=list)
    tool_calls: list[TraceToolCall] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def steps(self) -> int:
        return len(self.calls)

    def metadata(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_tokens": sum(c.input_tokens for c in self.calls),
            "output_tokens": sum(c.output_tokens for c in self.calls),
            # an unknown price counts as 0 here; the call itself says None
            "cost_usd": sum(c.cost_usd or 0.0 for c in self.calls),
            "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
            "calls": [c.as_dict() for c in self.calls],
            "tool_calls": [t.as_dict() for t in self.tool_calls],
            "steps": self.steps,
        }


# -- the activity of one job, for its evaluation trace ----------------------------------------------------

ACTIVITY_MAX_ENTRIES = 1000  # calls and tool runs kept per job; the rest are only counted


@dataclass
class JudgeActivity:
    """The model calls and tool runs made while one job ran, in the order they started."""

    max_entries: int = ACTIVITY_MAX_ENTRIES
    entries: list[JudgeCall | TraceToolCall] = field(default_factory=list)
    dropped: int = 0  # entries past max_entries

    def add(self, entry: JudgeCall | TraceToolCall) -> None:
        if len(self.entries) < self.max_entries:
            self.entries.append(entry)
        else:
            self.dropped += 1

    def __bool__(self) -> bool:
        return bool(self.entries) or self.dropped > 0


_activity: ContextVar[JudgeActivity | None] = ContextVar("evalstream_judge_activity", default=None)


@contextmanager
def recording_judge_activity(max_entries: int = ACTIVITY_MAX_ENTRIES) -> Iterator[JudgeActivity]:
    """Collect the judge calls and tool runs of the code run inside (and of the tasks it starts)."""
    activity = JudgeActivity(max_entries)
    token = _activity.set(activity)
    try:
        yield activity
    finally:
        _activity.reset(token)


def note_dropped(count: int) -> None:
    """Count `count` entries the current recording did not get (a sandbox kept only the first ones)."""
    activity = _activity.get()
    if activity is not None and count > 0:
        activity.dropped += count


def note_activity(entry: JudgeCall | TraceToolCall) -> None:
    """Add `entry` to the current recording, if there is one (the judge client and the tool boxes call it)."""
    activity = _activity.get()
    if activity is not None:
        activity.add(entry)


# -- across the sandbox pipe ------------------------------------------------------------------------------

def activity_to_wire(entry: JudgeCall | TraceToolCall, text_chars: int) -> dict[str, Any]:
    """An entry as JSON for the sandbox's reply, each text cut at `text_chars` (the evaluation trace's cap)."""
    if isinstance(entry, TraceToolCall):
        return {"kind": "tool", "step": entry.step, "name": entry.name, "arguments": entry.arguments,
                "result_chars": entry.result_chars, "ms": entry.ms, "error": entry.error,
                "result": entry.result[:text_chars], "started_at": entry.started_at}
    wire = entry.as_dict(max_message_chars=text_chars)
    wire.update(kind="call", response_text=(entry.response_text or "")[:text_chars] if entry.response_text else None,
                tool_calls=[{"id": c.id, "name": c.name, "arguments": c.arguments[:text_chars]} for c in entry.tool_calls],
                started_at=entry.started_at)
    return wire


def activity_from_wire(wire: Any) -> JudgeCall | TraceToolCall:
    """An entry from a sandbox's reply. The sandbox runs uploaded code, so this is untrusted: wrong types
    raise (the caller counts the entry as dropped); sizes are bounded again by the evaluation trace."""
    if not isinstance(wire, dict):
        raise TypeError("an activity entry is an object")
    if wire.get("kind") == "tool":
        return TraceToolCall(step=_int(wire.get("step")), name=_str(wire.get("name")),
                             arguments=_dict(wire.get("arguments")), result_chars=_int(wire.get("result_chars")),
                             ms=_float(wire.get("ms")), error=_opt_str(wire.get("error")),
                             result=_str(wire.get("result") or ""), started_at=_float(wire.get("started_at")))
    if wire.get("kind") != "call":
        raise ValueError(f"unknown activity kind {str(wire.get('kind'))[:40]!r}")
    messages = wire.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise TypeError("a call's messages are a list of objects")
    calls = wire.get("tool_calls") or []
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise TypeError("a call's tool_calls are a list of objects")
    cost = wire.get("cost_usd")
    return JudgeCall(
        model=_str(wire.get("model")), messages=messages,
        tool_names=[_str(n) for n in (wire.get("tools") or []) if isinstance(n, str)],
        tool_choice=wire.get("tool_choice"), response_text=_opt_str(wire.get("response_text")),
        tool_calls=[ToolCallRequest(id=_str(c.get("id") or ""), name=_str(c.get("name")),
                                    arguments=_str(c.get("arguments") or "")) for c in calls],
        input_tokens=_int(wire.get("input_tokens")), output_tokens=_int(wire.get("output_tokens")),
        cost_usd=None if cost is None else _float(cost), latency_ms=_float(wire.get("latency_ms")),
        attempts=_int(wire.get("attempts")), cached=bool(wire.get("cached")), error=_opt_str(wire.get("error")),
        retries=[_retry(r) for r in (wire.get("retries") or [])], started_at=_float(wire.get("started_at")))


def _retry(wire: Any) -> RetryRecord:
    wire = _dict(wire)
    status, after = wire.get("status"), wire.get("retry_after_s")
    return RetryRecord(attempt=_int(wire.get("attempt")), error=_str(wire.get("error")),
                       status=None if status is None else _int(status), wait_s=_float(wire.get("wait_s")),
                       retry_after_s=None if after is None else _float(after))


_MAX_SECONDS_OR_MS = 1e12  # an epoch time in seconds, a duration in ms, a cost in USD: all far below


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if not 0 <= value < 2**53:
        raise ValueError(f"{value!r} is out of range")
    return value


def _float(value: Any, high: float = _MAX_SECONDS_OR_MS) -> float:
    """A number in [0, high]: times, durations and costs from a sandbox cannot overflow what is built from them."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value) or not 0 <= value <= high:
        raise ValueError(f"{value!r} is out of range")
    return float(value)


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value
