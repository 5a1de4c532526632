"""Scorers for tests/integration/test_metrics.py, named in its rules by dotted path."""

from __future__ import annotations

import asyncio

from pipeline.contracts import Trace
from pipeline.errors import RetryableScorerError
from scorers.base import Score, Scorer


class Picky(Scorer):
    """An error score for traces whose root is named `bad`; gives up (a dead letter) on `flaky`."""

    name = "picky"

    def score(self, target: Trace) -> Score:
        if target.name == "bad":
            raise ValueError("bad trace")
        if target.name == "flaky":
            raise RetryableScorerError("upstream unavailable")
        return Score(value=1.0)


class Slow(Scorer):
    """Takes a while, so that jobs queue up behind it."""

    name = "slow"

    async def score(self, target: Trace) -> Score:
        await asyncio.sleep(0.2)
        return Score(value=1.0)
