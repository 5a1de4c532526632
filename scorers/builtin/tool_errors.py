from __future__ import annotations

from pipeline.contracts import Trace
from scorers.base import Score, Scorer, ScoreTarget


class ToolErrors(Scorer):
    """Fails a trace with more than `max_errors` failed tool calls or more than `max_retries` retries
    (a tool called again after it failed). Value: failed tool calls + retries."""

    name = "tool_errors"
    higher_is_better = False

    def __init__(self, max_errors: int = 0, max_retries: int = 1) -> None:
        if max_errors < 0 or max_retries < 0:
            raise ValueError("max_errors and max_retries must be >= 0")
        self.max_errors = max_errors
        self.max_retries = max_retries

    async def score(self, target: ScoreTarget) -> Score:
        if not isinstance(target, Trace):
            raise TypeError("tool_errors scores traces, not examples")
        tools = sorted((s for s in target.spans if s.span_type == "tool"), key=lambda s: s.start_ns)
        failed = [s for s in tools if s.status == "error"]
        failed_names: set[str] = set()
        retries = 0
        for span in tools:
            if span.name in failed_names:
                retries += 1
            if span.status == "error":
                failed_names.add(span.name)
        passed = len(failed) <= self.max_errors and retries <= self.max_retries
        detail = ", ".join(f"{s.name} ({s.error.type if s.error else 'error'})" for s in failed[:5])
        reason = (f"{len(failed)} failed tool call(s) (limit {self.max_errors}), {retries} retr"
                  f"{'y' if retries == 1 else 'ies'} (limit {self.max_retries})" + (f": {detail}" if detail else ""))
        return Score(value=len(failed) + retries, passed=passed, reason=reason,
                     metadata={"failed": len(failed), "retries": retries})
