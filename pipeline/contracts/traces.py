"""Trace: an assembled trace version, emitted when the assembler closes it; TraceBatch: the versions one
partition closed on one tick, carried as one message."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from pipeline.contracts.spans import Span, _Wire


class TraceStatus(StrEnum):
    COMPLETE = "complete"  # the root ended and the trace went quiet (or the SDK said final)
    INCOMPLETE = "incomplete"  # the root never ended: closed by the idle timeout


class CloseReason(StrEnum):
    QUIET = "quiet_period"
    FINAL = "final_marker"
    IDLE = "idle_timeout"


class Trace(_Wire):
    v: Literal[1] = 1
    trace_id: str
    version: int = Field(ge=1)
    project: str = "default"
    status: TraceStatus
    close_reason: CloseReason
    root_span_id: str | None = None
    name: str | None = None  # the root span's name
    start_ns: int = 0
    end_ns: int = 0
    closed_at_ns: int = 0
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


class TraceBatch(_Wire):
    """Closed trace versions of one partition, in one message (`evalstream.traces.v2`), so that the
    router and the sink handle a tick's closes as one event rather than one event per trace."""

    v: Literal[1] = 1
    traces: list[Trace]
