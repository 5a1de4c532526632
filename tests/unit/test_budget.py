"""pipeline/scoring/budget: per-rule spend over a rolling window, and when a rule may run again."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.rules import parse_rules
from pipeline.rules.model import Budget
from pipeline.scoring.budget import Spend, SpendLedger


def test_a_rule_under_budget_runs_and_one_over_budget_waits_until_spend_leaves_the_window() -> None:
    ledger = SpendLedger(window_s=3600)
    budget = Budget(tokens_per_hour=1000)
    assert ledger.blocked_until("judge", budget, now=0) is None
    ledger.charge("judge", Spend(tokens=600), now=10)
    assert ledger.blocked_until("judge", budget, now=20) is None
    ledger.charge("judge", Spend(tokens=500), now=30)
    # 1100 spent: it frees up when the first charge (t=10) leaves the window, leaving 500.
    assert ledger.blocked_until("judge", budget, now=40) == 3610
    assert ledger.blocked_until("judge", budget, now=3611) is None
    assert "500/1000 tokens" in ledger.describe("judge", budget, now=3611)


def test_cost_budgets_and_rules_are_independent() -> None:
    ledger = SpendLedger(window_s=60)
    budget = Budget(cost_usd_per_hour=0.01)
    ledger.charge("a", Spend(cost_usd=0.02), now=0)
    assert ledger.blocked_until("a", budget, now=1) == 60
    assert ledger.blocked_until("b", budget, now=1) is None
    assert ledger.blocked_until("a", None, now=1) is None  # no budget, never blocked


def test_spend_is_read_from_judge_metadata() -> None:
    spend = Spend.from_metadata({"judge": {"input_tokens": 120, "output_tokens": 30, "cost_usd": 0.002}})
    assert spend == Spend(tokens=150, cost_usd=0.002)
    assert Spend.from_metadata({}) == Spend() and Spend.from_metadata({"judge": "odd"}) == Spend()


def test_rules_accept_a_budget_and_reject_an_empty_one() -> None:
    rules = parse_rules({"rules": [{"name": "judge", "scorer": "error_spans", "budget": {"tokens_per_hour": 5000}}]})
    assert rules.rule("judge").budget == Budget(tokens_per_hour=5000)
    with pytest.raises(ValidationError, match="tokens_per_hour, cost_usd_per_hour or both"):
        Budget()
