from __future__ import annotations

from pipeline.contracts import Trace
from scorers.base import Score, Scorer, ScoreTarget


class TraceCost(Scorer):
    """Fails a trace whose LLM cost is over `max_usd` or whose tokens are over `max_tokens`.
    Value: the cost in USD (spans the pipeline could not price count as 0)."""

    name = "trace_cost"
    higher_is_better = False

    def __init__(self, max_usd: float | None = None, max_tokens: int | None = None) -> None:
        if max_usd is None and max_tokens is None:
            raise ValueError("set max_usd, max_tokens or both")
        if (max_usd is not None and max_usd <= 0) or (max_tokens is not None and max_tokens <= 0):
            raise ValueError("max_usd and max_tokens must be positive")
        self.max_usd = max_usd
        self.max_tokens = max_tokens

    async def score(self, target: ScoreTarget) -> Score:
        if not isinstance(target, Trace):
            raise TypeError("trace_cost scores traces, not examples")
        cost = sum(s.cost_usd or 0.0 for s in target.spans)
        tokens = sum(s.total_tokens or (s.input_tokens or 0) + (s.output_tokens or 0) for s in target.spans)
        over = []
        if self.max_usd is not None and cost > self.max_usd:
            over.append(f"cost ${cost:.4f} > ${self.max_usd:g}")
        if self.max_tokens is not None and tokens > self.max_tokens:
            over.append(f"{tokens} tokens > {self.max_tokens}")
        reason = "; ".join(over) or f"cost ${cost:.4f}, {tokens} tokens: within limits"
        return Score(value=round(cost, 6), passed=not over, reason=reason, metadata={"tokens": tokens})
