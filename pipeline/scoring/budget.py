"""Per-rule spend over a rolling hour, and when a rule may run again.

Spend is what judges report in `metadata["judge"]` (input/output tokens, cost). The ledger is
per worker process: with N workers a rule can spend up to N times its budget, and jobs admitted
together before their spend is known can overshoot by up to the scorer concurrency.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from pipeline.rules.model import Budget

WINDOW_S = 3600.0  # budgets are per hour; tests shorten the window


@dataclass(frozen=True)
class Spend:
    tokens: int = 0
    cost_usd: float = 0.0

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Spend:
        judge = metadata.get("judge") if isinstance(metadata, dict) else None
        if not isinstance(judge, dict):
            return cls()
        tokens = int(judge.get("input_tokens") or 0) + int(judge.get("output_tokens") or 0)
        return cls(tokens=tokens, cost_usd=float(judge.get("cost_usd") or 0.0))


class SpendLedger:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._entries: dict[str, deque[tuple[float, Spend]]] = {}

    def _window(self, rule: str, now: float) -> deque[tuple[float, Spend]]:
        entries = self._entries.setdefault(rule, deque())
        while entries and entries[0][0] <= now - self.window_s:
            entries.popleft()
        return entries

    def spent(self, rule: str, now: float) -> Spend:
        entries = self._window(rule, now)
        return Spend(sum(s.tokens for _, s in entries), sum(s.cost_usd for _, s in entries))

    def charge(self, rule: str, spend: Spend, now: float) -> None:
        if spend.tokens or spend.cost_usd:
            self._window(rule, now).append((now, spend))

    def blocked_until(self, rule: str, budget: Budget | None, now: float) -> float | None:
        """None if the rule may spend now, else the time at which enough spend leaves the window."""
        if budget is None:
            return None
        entries = self._window(rule, now)
        tokens = sum(s.tokens for _, s in entries)
        cost = sum(s.cost_usd for _, s in entries)
        if not _over(budget, tokens, cost):
            return None
        for at, spend in entries:
            tokens -= spend.tokens
            cost -= spend.cost_usd
            if not _over(budget, tokens, cost):
                return at + self.window_s
        return now + self.window_s

    def describe(self, rule: str, budget: Budget, now: float) -> str:
        spent = self.spent(rule, now)
        parts = []
        if budget.tokens_per_hour is not None:
            parts.append(f"{spent.tokens}/{budget.tokens_per_hour} tokens")
        if budget.cost_usd_per_hour is not None:
            parts.append(f"${spent.cost_usd:.4f}/${budget.cost_usd_per_hour:g}")
        return f"budget spent in the last {self.window_s:g} s: " + ", ".join(parts)


def _over(budget: Budget, tokens: int, cost: float) -> bool:
    return ((budget.tokens_per_hour is not None and tokens >= budget.tokens_per_hour)
            or (budget.cost_usd_per_hour is not None and cost >= budget.cost_usd_per_hour))
