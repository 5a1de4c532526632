"""Per-rule spend over a rolling hour, shared by every scorer process through the stream.

Spend is what judges report in `metadata["judge"]` (input/output tokens, cost). Before a job of a rule with a
budget runs, its process writes a reservation (an estimate) to `evalstream.budget-spend.v1`, keyed by rule;
after, a settlement (the real spend) that replaces it. Every scorer process reads every record of the topic
in its order (one partition per rule, so one order per rule) into a `SharedLedger`.

Grants are decided in that order, by every reader alike: a reservation is granted if what the window holds
at the reservation's own time (settled spend, granted reservations not expired, by the record's clock) plus
its estimate is within the cap the record carries. So the process that wrote it, and every other, reach the
same verdict from the same records, and the estimates granted never add up past the cap, whatever the number
of processes. What can pass the cap is real spend above its estimate (docs/budgets.md has the bound).

A process counts its own reservations at once (`admit` puts them in `pending` until it reads them back), so
it does not write reservations it can already tell will be refused. A reservation that is never settled
(its process died) counts as zero after `expires_at_ns`.

This module is pure: no clock, no I/O; `worker/budget_ledger.py` feeds it and writes its records.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pipeline.contracts.spend import SpendRecord
from pipeline.rules.model import Budget

WINDOW_S = 3600.0  # budgets are per hour; tests shorten the window
_PRUNE_SLACK_NS = 60 * 10**9  # entries this long past the window are dropped (clocks of writers differ a little)
_COST_EPSILON = 1e-12


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

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.tokens + other.tokens, self.cost_usd + other.cost_usd)


@dataclass
class _Entry:
    at_ns: int
    spend: Spend
    settled: bool
    expires_at_ns: int = 0  # a reservation's; a settlement never expires

    def counts_at(self, now_ns: int, window_ns: int) -> bool:
        return self.at_ns > now_ns - window_ns and (self.settled or now_ns < self.expires_at_ns)


def fits(used: Spend, estimate: Spend, tokens_cap: int | None, cost_cap: float | None) -> bool:
    return ((tokens_cap is None or used.tokens + estimate.tokens <= tokens_cap)
            and (cost_cap is None or used.cost_usd + estimate.cost_usd <= cost_cap + _COST_EPSILON))


class SharedLedger:
    """The spend records of every scorer process, in topic order, plus this process's own reservations
    not read back yet. Times are nanoseconds since the epoch, passed in."""

    def __init__(self, *, process: str, window_s: float = WINDOW_S, reservation_timeout_s: float = 600.0,
                 default_estimate: Spend = Spend(tokens=2000, cost_usd=0.02)) -> None:
        self.process = process
        self.window_ns = int(window_s * 1e9)
        self.timeout_ns = int(reservation_timeout_s * 1e9)
        self.default_estimate = default_estimate
        self._log: dict[str, dict[str, _Entry]] = {}  # rule -> reservation -> entry (granted or settled)
        self._pending: dict[str, tuple[str, _Entry]] = {}  # own reservations written, not read back yet

    # -- the topic, in order -------------------------------------------------------------------------------
    def apply(self, record: SpendRecord) -> bool | None:
        """Apply one record read from the topic. For a reservation, its verdict (True: granted); None for a
        settlement or a reservation seen before."""
        entries = self._log.setdefault(record.rule, {})
        self._prune(entries, record.at_ns)
        spend = Spend(record.tokens, record.cost_usd)
        if record.kind == "settle":
            self._pending.pop(record.reservation, None)
            if spend == Spend():
                entries.pop(record.reservation, None)  # a release, or a job that spent nothing
            else:
                entries[record.reservation] = _Entry(record.at_ns, spend, settled=True)
            return None
        if record.reservation in entries:
            return None
        self._pending.pop(record.reservation, None)
        used = self._sum(entries.values(), record.at_ns)
        if not fits(used, spend, record.tokens_cap, record.cost_usd_cap):
            return False
        entries[record.reservation] = _Entry(record.at_ns, spend, settled=False, expires_at_ns=record.expires_at_ns)
        return True

    def reset(self) -> None:
        """Forget what was read (before the topic is read again from its start); own pending ones stay."""
        self._log.clear()

    # -- this process's view -------------------------------------------------------------------------------
    def spent(self, rule: str, now_ns: int) -> Spend:
        """Settled spend plus live reservations in the window, this process's unconfirmed ones included."""
        own = (entry for r, entry in self._pending.values() if r == rule)
        return self._sum([*self._log.get(rule, {}).values(), *own], now_ns)

    def reserved(self, rule: str, now_ns: int) -> Spend:
        entries = [*self._log.get(rule, {}).values(), *(e for r, e in self._pending.values() if r == rule)]
        return self._sum([e for e in entries if not e.settled], now_ns)

    def estimate(self, rule: str, budget: Budget, now_ns: int) -> Spend:
        """The largest settled job of the rule in the window, else the default; never above the cap (so an
        empty window always admits one job)."""
        settled = [e.spend for e in self._log.get(rule, {}).values() if e.settled and e.counts_at(now_ns, self.window_ns)]
        guess = (Spend(max(s.tokens for s in settled), max(s.cost_usd for s in settled)) if settled
                 else self.default_estimate)
        tokens = guess.tokens if budget.tokens_per_hour is None else min(guess.tokens, budget.tokens_per_hour)
        cost = guess.cost_usd if budget.cost_usd_per_hour is None else min(guess.cost_usd, budget.cost_usd_per_hour)
        return Spend(tokens, cost)

    def admit(self, rule: str, budget: Budget, now_ns: int) -> SpendRecord | None:
        """A reservation to write if the estimate fits what this process sees (and count it at once), else None."""
        estimate = self.estimate(rule, budget, now_ns)
        if not fits(self.spent(rule, now_ns), estimate, budget.tokens_per_hour, budget.cost_usd_per_hour):
            return None
        record = SpendRecord(kind="reserve", rule=rule, reservation=uuid.uuid4().hex, process=self.process,
                             at_ns=now_ns, tokens=estimate.tokens, cost_usd=estimate.cost_usd,
                             tokens_cap=budget.tokens_per_hour, cost_usd_cap=budget.cost_usd_per_hour,
                             expires_at_ns=now_ns + self.timeout_ns)
        self._pending[record.reservation] = (rule, _Entry(now_ns, estimate, settled=False,
                                                          expires_at_ns=record.expires_at_ns))
        return record

    def settlement(self, rule: str, reservation: str, spend: Spend, now_ns: int) -> SpendRecord:
        """The record that replaces a reservation by what the job spent (zero: a release)."""
        if spend == Spend():
            self._pending.pop(reservation, None)
        return SpendRecord(kind="settle", rule=rule, reservation=reservation, process=self.process, at_ns=now_ns,
                           tokens=min(spend.tokens, 2**32 - 1), cost_usd=spend.cost_usd)

    def blocked_until(self, rule: str, budget: Budget, now_ns: int) -> float:
        """When (seconds since the epoch) enough spend leaves the window, or expires, for the next estimate."""
        estimate = self.estimate(rule, budget, now_ns)
        entries = [e for e in (*self._log.get(rule, {}).values(), *(e for r, e in self._pending.values() if r == rule))
                   if e.counts_at(now_ns, self.window_ns)]
        used = self._sum(entries, now_ns)
        for entry in sorted(entries, key=self._leaves_at):
            if fits(used, estimate, budget.tokens_per_hour, budget.cost_usd_per_hour):
                break
            used = Spend(used.tokens - entry.spend.tokens, used.cost_usd - entry.spend.cost_usd)
            now_ns = self._leaves_at(entry)
        return now_ns / 1e9 if fits(used, estimate, budget.tokens_per_hour, budget.cost_usd_per_hour) \
            else (now_ns + self.window_ns) / 1e9

    def describe(self, rule: str, budget: Budget, now_ns: int) -> str:
        spent, reserved = self.spent(rule, now_ns), self.reserved(rule, now_ns)
        parts = []
        if budget.tokens_per_hour is not None:
            parts.append(f"{spent.tokens}/{budget.tokens_per_hour} tokens")
        if budget.cost_usd_per_hour is not None:
            parts.append(f"${spent.cost_usd:.4f}/${budget.cost_usd_per_hour:g}")
        held = f" ({reserved.tokens} tokens, ${reserved.cost_usd:.4f} reserved by jobs in flight)" \
            if reserved != Spend() else ""
        return f"budget spent in the last {self.window_ns / 1e9:g} s by all scorers: " + ", ".join(parts) + held

    # -- helpers -------------------------------------------------------------------------------------------
    def _sum(self, entries: Any, now_ns: int) -> Spend:
        tokens, cost = 0, 0.0
        for entry in entries:
            if entry.counts_at(now_ns, self.window_ns):
                tokens += entry.spend.tokens
                cost += entry.spend.cost_usd
        return Spend(tokens, cost)

    def _leaves_at(self, entry: _Entry) -> int:
        leaves = entry.at_ns + self.window_ns
        return leaves if entry.settled else min(leaves, entry.expires_at_ns)

    def _prune(self, entries: dict[str, _Entry], now_ns: int) -> None:
        """Drop entries from the front (oldest first) that no reader's window can hold any more."""
        cutoff = now_ns - self.window_ns - _PRUNE_SLACK_NS
        while entries:
            reservation, entry = next(iter(entries.items()))
            if entry.at_ns > cutoff or not (entry.settled or entry.expires_at_ns <= cutoff):
                break
            del entries[reservation]
