"""Per-model limits of the judge client: a concurrency cap and request / token rate buckets."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelLimits:
    """`None` means unlimited. Rates are per minute, as providers publish them."""

    max_concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")

    def tightened(self, other: ModelLimits) -> ModelLimits:
        """The stricter of both, field by field: rules sharing a model must not loosen each other's limits."""
        return ModelLimits(
            max_concurrency=min(self.max_concurrency, other.max_concurrency),
            requests_per_minute=_min_or_none(self.requests_per_minute, other.requests_per_minute),
            tokens_per_minute=_min_or_none(self.tokens_per_minute, other.tokens_per_minute),
        )


def _min_or_none(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


class TokenBucket:
    """A bucket refilled at `per_minute / 60` per second and holding at most a minute's worth.

    Callers reserve what they need and sleep for the returned wait. The level may go below zero, so
    later callers queue behind earlier ones without a lock, and the bucket is not bound to an event loop.
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._level = self.capacity
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    @property
    def level(self) -> float:
        self._refill()
        return self._level

    def reserve(self, amount: float) -> float:
        """Take `amount` (at most the capacity) and return the seconds to wait before using it."""
        self._refill()
        self._level -= min(amount, self.capacity)
        return max(0.0, -self._level / self.rate)

    def adjust(self, delta: float) -> None:
        """Correct an estimate once the real amount is known (positive: it used more than reserved)."""
        self._refill()
        self._level = min(self.capacity, self._level - delta)


class RateGate:
    """The rate buckets of one model (concurrency is per event loop, so the client keeps that apart)."""

    def __init__(self, limits: ModelLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.requests = TokenBucket(limits.requests_per_minute, clock) if limits.requests_per_minute else None
        self.tokens = TokenBucket(limits.tokens_per_minute, clock) if limits.tokens_per_minute else None
        self.paused_until = 0.0  # set by a 429: every call to this model waits, not only the one that got it

    def reserve(self, estimated_tokens: int) -> float:
        wait = 0.0
        if self.requests is not None:
            wait = max(wait, self.requests.reserve(1))
        if self.tokens is not None:
            wait = max(wait, self.tokens.reserve(estimated_tokens))
        return wait

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        if self.tokens is not None:
            self.tokens.adjust(actual_tokens - estimated_tokens)
