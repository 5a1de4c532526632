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
