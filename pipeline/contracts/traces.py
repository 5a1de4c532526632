"""Trace: an assembled trace version, emitted when the assembler closes it (in a `closes.TraceBatch`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from pipeline.contracts.bounds import ID_MAX_CHARS, TimestampNs, Version
from pipeline.contracts.spans import Span, _Wire


class TraceStatus(StrEnum):
    COMPLETE = "complete"  # the root ended and the trace went quiet (or the SDK said final)
    INCOMPLETE = "incomplete"  # the root never ended: closed by the idle timeout


class CloseReason(StrEnum):
    QUIET = "quiet_period"
    FINAL = "final_marker"
    IDLE = "idle_timeout"
    REMOTE_WAIT = "remote_wait"  # the root ended, but a remote call's callee sent nothing within remote_wait_s


class RemoteCallWait(_Wire):
    """A remote call the trace waited for before it closed: answered by a span of the callee, or not."""

    span_id: str = Field(max_length=ID_MAX_CHARS)
    name: str = ""
    answered: bool
    waited_s: float = Field(default=0.0, ge=0, le=10**7)


class LateSpan(_Wire):
    """The span that re-opened a closed trace as a new version, and how long after the close it came."""

    span_id: str = Field(max_length=ID_MAX_CHARS)
    name: str = ""
    late_by_s: float = Field(default=0.0, ge=0, le=10**9)


class Trace(_Wire):
    v: Literal[1] = 1
    trace_id: str = Field(max_length=ID_MAX_CHARS)
    version: Version
    project: str = "default"
    status: TraceStatus
    close_reason: CloseReason
    root_span_id: str | None = None
    name: str | None = None  # the root span's name
    start_ns: TimestampNs = 0
    end_ns: TimestampNs = 0
    closed_at_ns: TimestampNs = 0
    waited_for: list[RemoteCallWait] = Field(default_factory=list)  # remote calls, answered or not
    reopened_by: LateSpan | None = None  # set on a version a late span re-opened
    spans: list[Span] = Field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e6

    @property
    def root(self) -> Span | None:
        for span in self.spans:
            if span.span_id == self.root_span_id:
                return span
        return None

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd or 0.0 for s in self.spans)

    @property
    def has_error(self) -> bool:
        return any(s.status == "error" for s in self.spans)
