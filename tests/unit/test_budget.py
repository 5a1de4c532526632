"""pipeline/scoring/budget: the shared spend ledger. Reservations, settlements and expiry, judged in the topic's
order; two simulated scorer processes that share one topic (a list both read in order)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.contracts import encode
from pipeline.contracts.spend import SpendRecord
from pipeline.rules import parse_rules
from pipeline.rules.model import Budget
from pipeline.scoring.budget import SharedLedger, Spend

S = 10**9  # ns per second
CAP = Budget(tokens_per_hour=1000)


def ledger(name: str = "p1", **kwargs: object) -> SharedLedger:
    return SharedLedger(process=name, window_s=60, reservation_timeout_s=10,
                        default_estimate=Spend(tokens=400, cost_usd=0.01), **kwargs)  # type: ignore[arg-type]


class Topic:
    """One partition: every process reads every record, in the order written."""

    def __init__(self, *readers: SharedLedger) -> None:
        self.records: list[SpendRecord] = []
        self.readers = readers
        self.read = {id(r): 0 for r in readers}

    def write(self, record: SpendRecord | None) -> SpendRecord | None:
        if record is not None:
            self.records.append(record)
        return record

    def deliver(self, reader: SharedLedger) -> dict[str, bool]:
        verdicts = {}
        for record in self.records[self.read[id(reader)]:]:
            verdict = reader.apply(record)
            if verdict is not None:
                verdicts[record.reservation] = verdict
        self.read[id(reader)] = len(self.records)
        return verdicts


def test_a_reservation_counts_at_once_and_its_settlement_replaces_it() -> None:
    p = ledger()
    record = p.admit("judge", CAP, 1 * S)
    assert record is not None and record.tokens == 400 and record.tokens_cap == 1000
    assert p.spent("judge", 1 * S) == Spend(400, 0.01)  # seen before it is read back
    assert p.apply(record) is True and p.spent("judge", 1 * S) == Spend(400, 0.01)
    assert p.apply(record) is None  # read twice: counted once
    p.apply(p.settlement("judge", record.reservation, Spend(tokens=300), 2 * S))
    assert p.spent("judge", 3 * S) == Spend(300, 0.0) and p.reserved("judge", 3 * S) == Spend()
    # The estimate is now the largest settled job, and it leaves the window a minute after it settled.
    assert p.estimate("judge", CAP, 3 * S) == Spend(300, 0.0)
    assert p.spent("judge", 62 * S) == Spend() and p.estimate("judge", CAP, 62 * S).tokens == 400


def test_a_reservation_over_what_is_left_is_not_written_and_says_when_it_may_run() -> None:
    p = ledger()
    topic = Topic(p)
    first, second = (topic.write(p.admit("judge", CAP, t * S)) for t in (1, 2))
    assert first is not None and second is not None  # 400 + 400 <= 1000
    assert p.admit("judge", CAP, 3 * S) is None  # 800 + 400 > 1000
    topic.deliver(p)
    topic.write(p.settlement("judge", first.reservation, Spend(tokens=500), 5 * S))
    topic.deliver(p)
    # 500 settled + 400 reserved; the next estimate is 500: the reservation expires at 12 s (2 + 10), then 500 + 500 fit.
    assert p.blocked_until("judge", CAP, 6 * S) == 12.0
    assert "900/1000 tokens (400 tokens" in p.describe("judge", CAP, 6 * S)
    assert p.admit("other", CAP, 6 * S) is not None  # rules are independent


def test_a_reservation_of_a_process_that_died_expires_so_the_rule_is_not_starved() -> None:
    dead, alive = ledger("dead"), ledger("alive")
    topic = Topic(dead, alive)
    for t in (1, 2):
        topic.write(dead.admit("judge", CAP, t * S))  # then the process dies: never settled
    topic.deliver(alive)
    assert alive.spent("judge", 5 * S) == Spend(800, 0.02)
    assert alive.admit("judge", CAP, 5 * S) is None
    assert alive.spent("judge", 12 * S) == Spend()  # both expired (10 s)
    late = topic.write(alive.admit("judge", CAP, 12 * S))
    assert late is not None and topic.deliver(alive) == {late.reservation: True}


def test_two_processes_that_each_see_room_are_judged_in_the_topics_order() -> None:
    """Both write before reading the other's reservations; every reader grants the same ones, and what is
    granted never passes the cap."""
    p1, p2 = ledger("p1"), ledger("p2")
    topic = Topic(p1, p2)
    mine = [topic.write(p1.admit("judge", CAP, 1 * S)) for _ in range(2)]
    theirs = [topic.write(p2.admit("judge", CAP, 1 * S)) for _ in range(2)]
    assert all(mine) and all(theirs)  # each alone has room for two
    v1, v2 = topic.deliver(p1), topic.deliver(p2)
    assert v1 == v2  # the same verdicts everywhere
    granted = [r for r in topic.records if v1[r.reservation]]
    assert [r.process for r in granted] == ["p1", "p1"] and sum(r.tokens for r in granted) <= 1000
    # p2's refused reservations hold nothing, in either process.
    assert p1.spent("judge", 2 * S) == p2.spent("judge", 2 * S) == Spend(800, 0.02)


def test_the_cap_is_the_one_the_record_carries_so_readers_with_other_rules_agree() -> None:
    p1, p2 = ledger("p1"), ledger("p2")
    topic = Topic(p1, p2)
    topic.write(p1.admit("judge", Budget(tokens_per_hour=400), 1 * S))
    topic.write(p1.admit("judge", Budget(tokens_per_hour=5000), 1 * S))
    assert topic.deliver(p1) == topic.deliver(p2)


def test_cost_budgets_and_an_estimate_above_the_cap_still_admit_one_job() -> None:
    p = ledger()
    budget = Budget(cost_usd_per_hour=0.005)  # below the default estimate of $0.01
    record = p.admit("a", budget, 1 * S)
    assert record is not None and record.cost_usd == 0.005 and p.apply(record) is True
    assert p.admit("a", budget, 2 * S) is None


def test_spend_records_are_bounded() -> None:
    good = SpendRecord(kind="reserve", rule="r", reservation="x", at_ns=1)
    assert SpendRecord.model_validate_json(encode(good)) == good
    for bad in ({"tokens": -1}, {"tokens": 2**40}, {"cost_usd": float("inf")}, {"rule": ""}, {"rule": "r" * 300},
                {"kind": "steal"}, {"reservation": "x" * 65}):
        with pytest.raises(ValidationError):
            SpendRecord.model_validate({**good.model_dump(), **bad})


def test_spend_is_read_from_judge_metadata() -> None:
    spend = Spend.from_metadata({"judge": {"input_tokens": 120, "output_tokens": 30, "cost_usd": 0.002}})
    assert spend == Spend(tokens=150, cost_usd=0.002)
    assert Spend.from_metadata({}) == Spend() and Spend.from_metadata({"judge": "odd"}) == Spend()


def test_rules_accept_a_budget_and_reject_an_empty_one() -> None:
    rules = parse_rules({"rules": [{"name": "judge", "scorer": "error_spans", "budget": {"tokens_per_hour": 5000}}]})
    assert rules.rule("judge").budget == Budget(tokens_per_hour=5000)
    with pytest.raises(ValidationError, match="tokens_per_hour, cost_usd_per_hour or both"):
        Budget()
