"""worker/budget_ledger: a process's reservations are granted when read back from the topic, bad records are
counted and ignored, and a reservation that never comes back is released and refused."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from pipeline import topics
from pipeline.contracts import encode
from pipeline.contracts.spend import SpendRecord
from pipeline.metrics import Counters
from pipeline.rules.model import Budget
from pipeline.settings import Settings
from pipeline.worker.budget_ledger import SharedBudget

CAP = Budget(tokens_per_hour=1000)


def shared(echo: bool, confirm_timeout_s: float = 2.0) -> tuple[SharedBudget, list[tuple[str, bytes, bytes]]]:
    sent: list[tuple[str, bytes, bytes]] = []
    ctx = SimpleNamespace(settings=Settings(budget_confirm_timeout_s=confirm_timeout_s, budget_window_s=60,
                                            budget_default_estimate_tokens=400), counters=Counters())

    async def send(topic: str, key: str, value: bytes) -> None:
        sent.append((topic, key.encode(), value))
        if echo:  # the follower reads it back a moment later
            asyncio.get_running_loop().call_later(0.01, budget.on_record, value, key.encode(), "t[0]@0")

    ctx.send = send
    budget = SharedBudget(ctx, "localhost:9092")  # type: ignore[arg-type]
    return budget, sent


def test_reservations_are_granted_in_the_order_they_are_read_back() -> None:
    async def run() -> None:
        budget, sent = shared(echo=True)
        granted = await budget.reserve([("judge", CAP)] * 3)  # 400 + 400 fit, the third is not even written
        assert [g is not None for g in granted] == [True, True, False]
        assert [t for t, _, _ in sent] == [topics.BUDGET_SPEND] * 2
        await budget.settle("judge", granted[0], budget.ledger.estimate("judge", CAP, 0))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert SpendRecord.model_validate_json(sent[-1][2]).kind == "settle"

    asyncio.run(run())


def test_a_reservation_not_read_back_is_released_and_its_job_refused() -> None:
    async def run() -> None:
        budget, sent = shared(echo=False, confirm_timeout_s=0.05)
        assert await budget.reserve([("judge", CAP)]) == [None]
        kinds = [SpendRecord.model_validate_json(v).kind for _, _, v in sent]
        assert kinds == ["reserve", "settle"]  # the release
        assert budget.ledger.spent("judge", 0).tokens == 0  # nothing held

    asyncio.run(run())


def test_bad_records_are_counted_and_ignored() -> None:
    budget, _ = shared(echo=False)
    good = SpendRecord(kind="settle", rule="judge", reservation="x", at_ns=10**18, tokens=5)
    for value, key in ((b"{", b"judge"), (b"x" * 5000, b"judge"), (encode(good).replace(b'"tokens":5', b'"tokens":-5'),
                       b"judge"), (encode(good), b"other-rule"), (None, b"judge")):
        budget.on_record(value, key, "t[0]@1")
    assert budget.ctx.counters.get("budget_records_invalid") == 5
    budget.on_record(encode(good), b"judge", "t[0]@2")
    assert budget.ledger.spent("judge", 10**18).tokens == 5
