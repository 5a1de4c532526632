"""Scorers the SDK integration test asks for by reference; the worker process imports them."""

from __future__ import annotations

from pipeline.contracts import Example
from scorers.base import Score, Scorer, ScoreTarget


class MentionsPackage(Scorer):
    """Passes when the agent's response talks about the customer's package."""

    name = "mentions_package"

    async def score(self, target: ScoreTarget) -> Score:
        if not isinstance(target, Example):
            raise TypeError("mentions_package scores examples")
        response = str(getattr(target, "response", "") or target.outputs or "")
        hit = "package" in response.lower()
        return Score(value=1.0 if hit else 0.0, passed=hit,
                     reason="response addresses the package" if hit else "response ignores the package")


class ReportsSpend(Scorer):
    """Passes every trace and reports judge spend, like an LLM judge would (500 tokens per call)."""

    name = "reports_spend"

    async def score(self, target: ScoreTarget) -> Score:
        return Score(value=1.0, passed=True, reason="ok",
                     metadata={"judge": {"model": "fake", "input_tokens": 400, "output_tokens": 100,
                                         "cost_usd": 0.0}})
