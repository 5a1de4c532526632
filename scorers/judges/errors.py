"""What a judge raises. Transient provider failures use pipeline.errors.RetryableScorerError instead."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.errors import RetryableScorerError, ScorerError

if TYPE_CHECKING:
    from scorers.judges.records import JudgeCall


class JudgeOutputError(ScorerError):
    """The judge model answered, but not in the required shape. `raw` is what it said."""

    def __init__(self, problem: str, raw: str) -> None:
        super().__init__(f"malformed judge answer: {problem}; raw answer: {raw[:3000]}")
        self.problem = problem
        self.raw = raw


class JudgeRequestError(ScorerError):
    """The provider refused the request for a reason retrying cannot fix (bad request, auth, unknown model)."""

    def __init__(self, message: str, call: JudgeCall) -> None:
        super().__init__(message)
        self.call = call


class JudgeConfigError(ScorerError, ValueError):
    """A judge's params do not make sense (raised when the rules load, from the judge's constructor)."""


class JudgeRetriesExhausted(RetryableScorerError):
    """Rate limits, 5xx, timeouts or connection errors outlasted the judge client's retries.

    A RetryableScorerError, so the scoring runner retries the job later and dead-letters it when its own
    attempts run out. `call` is the recorded call with every failed attempt.
    """

    def __init__(self, message: str, call: JudgeCall) -> None:
        super().__init__(message)
        self.call = call
