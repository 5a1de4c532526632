from __future__ import annotations

from pipeline.contracts import Trace
from scorers.base import Score, Scorer, ScoreTarget


class ErrorSpans(Scorer):
    """Fails a trace with more than `max_errors` spans in error. Value: the error span count."""

    name = "error_spans"
    higher_is_better = False

    def __init__(self, max_errors: int = 0) -> None:
        if max_errors < 0:
            raise ValueError("max_errors must be >= 0")
        self.threshold = float(max_errors)

    async def score(self, target: ScoreTarget) -> Score:
        if not isinstance(target, Trace):
            raise TypeError("error_spans scores traces, not examples")
        errors = [s for s in target.spans if s.status == "error"]
        if not errors:
            return Score(value=0, reason="no span in error")
        first = errors[0]
        detail = f"{first.error.type}: {first.error.message}" if first.error else "status=error"
        return Score(value=len(errors), reason=f"{len(errors)} span(s) in error; first: {first.name} ({detail})")
