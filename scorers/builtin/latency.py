from __future__ import annotations

from pipeline.contracts import Trace
from scorers.base import Score, Scorer, ScoreTarget


class TraceLatency(Scorer):
    """Fails a trace whose end-to-end duration is over `max_ms`. Value: the duration in ms."""

    name = "trace_latency"
    higher_is_better = False

    def __init__(self, max_ms: float = 5000.0) -> None:
        if max_ms <= 0:
            raise ValueError("max_ms must be positive")
        self.threshold = float(max_ms)

    async def score(self, target: ScoreTarget) -> Score:
        if not isinstance(target, Trace):
            raise TypeError("trace_latency scores traces, not examples")
        ms = round(target.duration_ms, 3)
        return Score(value=ms, reason=f"trace took {ms:.0f} ms (limit {self.threshold:.0f} ms)")
