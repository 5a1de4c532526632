"""SpendRecord: one line of a rule's shared spend ledger, on `evalstream.budget-spend.v1` keyed by the rule.

A scorer process writes a `reserve` (its estimate, and the rule's cap as it read it) before it runs a job of
a rule with a budget, and a `settle` (what the judges really spent) after, for the same `reservation`.
Every scorer process reads them all (`scoring/budget.py` `SharedLedger`). Records come from any process that
can write the topic, so every field is bounded and a record that does not fit is ignored, not trusted.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.contracts.bounds import CostUsd, TimestampNs, UInt32
from pipeline.contracts.spans import _Wire

SPEND_RECORD_MAX_BYTES = 4096  # a record is a few hundred bytes; anything larger is refused unread
RULE_MAX_CHARS = 256


class SpendRecord(_Wire):
    v: Literal[1] = 1
    kind: Literal["reserve", "settle"]
    rule: str = Field(min_length=1, max_length=RULE_MAX_CHARS)
    reservation: str = Field(min_length=1, max_length=64)  # unique per job run: a settle names its reserve
    process: str = Field(default="", max_length=128)  # the writer (host:pid), for logs
    at_ns: TimestampNs  # the writer's clock: every reader judges a reservation at this time, so all agree
    tokens: UInt32 = 0  # reserve: the estimate; settle: what was spent
    cost_usd: CostUsd = 0.0
    # reserve only: the rule's budget as the writer read it (None: no cap of that kind)
    tokens_cap: UInt32 | None = None
    cost_usd_cap: CostUsd | None = None
    expires_at_ns: TimestampNs = 0  # reserve only: counts as zero from then on unless settled
