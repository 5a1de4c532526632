"""The shared spend ledger inside a scorer process: tail `evalstream.budget-spend.v1` (every partition, no
consumer group, from its start, like the scorer store) into a `SharedLedger`, write this process's
reservations and settlements, and tell the scorer which reservations the topic's order granted.

A record that is too large or does not validate is logged (with its partition and offset), counted
(`budget_records_invalid`) and ignored. If the broker goes away the topic is read again from its start
into an empty ledger; reservations waiting for their verdict get it when the re-read reaches them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from mode import Service

from pipeline import topics
from pipeline.contracts import decode, encode
from pipeline.contracts.spend import SPEND_RECORD_MAX_BYTES, SpendRecord
from pipeline.kafka_security import aiokafka_options
from pipeline.rules.model import Budget
from pipeline.scoring.budget import SharedLedger, Spend
from pipeline.scoring.store import assign_all, tail_consumer
from pipeline.worker.context import WorkerContext

log = logging.getLogger(__name__)


class SharedBudget:
    def __init__(self, ctx: WorkerContext, bootstrap: str, *, retry_s: float = 2.0) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.bootstrap = bootstrap
        self.retry_s = retry_s
        self.ledger = SharedLedger(
            process=f"{socket.gethostname()}:{os.getpid()}", window_s=s.budget_window_s,
            reservation_timeout_s=s.budget_reservation_timeout_s,
            default_estimate=Spend(s.budget_default_estimate_tokens, s.budget_default_estimate_usd))
        self._verdicts: dict[str, asyncio.Future[bool]] = {}

    # -- the scorer's side ---------------------------------------------------------------------------------
    async def reserve(self, wanted: list[tuple[str, Budget]]) -> list[str | None]:
        """Reserve an estimate for each (rule, budget); for each, its reservation id if the topic's order granted
        it, else None (over budget as this process sees it, refused in order, or not read back in time)."""
        now_ns = time.time_ns()
        records = [self.ledger.admit(rule, budget, now_ns) for rule, budget in wanted]
        loop = asyncio.get_running_loop()
        waiting = {r.reservation: loop.create_future() for r in records if r is not None}
        self._verdicts.update(waiting)
        try:
            for record in records:
                if record is not None:
                    await self._send(record)
            done, _ = await asyncio.wait(waiting.values(), timeout=self.ctx.settings.budget_confirm_timeout_s) \
                if waiting else (set(), set())
        finally:
            for reservation in waiting:
                self._verdicts.pop(reservation, None)
        granted: list[str | None] = []
        for record in records:
            if record is None:
                granted.append(None)
                continue
            future = waiting[record.reservation]
            verdict = "unconfirmed" if future not in done else "granted" if future.result() else "refused"
            self.ctx.counters.inc("budget_reservations", verdict=verdict)
            if verdict == "unconfirmed":  # it may still be granted later: release it so it cannot hold the budget
                log.warning("budget: reservation %s of rule %s not read back from %s in %g s; job deferred",
                            record.reservation, record.rule, topics.BUDGET_SPEND,
                            self.ctx.settings.budget_confirm_timeout_s)
                await self.settle(record.rule, record.reservation, Spend())
            granted.append(record.reservation if verdict == "granted" else None)
        return granted

    async def settle(self, rule: str, reservation: str, spend: Spend) -> None:
        """Replace a reservation by what the job spent. A failure is logged: the reservation then expires."""
        try:
            await self._send(self.ledger.settlement(rule, reservation, spend, time.time_ns()))
        except Exception:
            log.exception("budget: settling reservation %s of rule %s failed; it expires after %g s", reservation,
                          rule, self.ctx.settings.budget_reservation_timeout_s)

    async def _send(self, record: SpendRecord) -> None:
        await self.ctx.send(topics.BUDGET_SPEND, record.rule, encode(record))

    # -- the topic's side ----------------------------------------------------------------------------------
    def on_record(self, value: bytes | None, key: bytes | None, where: str) -> None:
        try:
            record = decode(value, SpendRecord, max_bytes=SPEND_RECORD_MAX_BYTES)
            if key is not None and key != record.rule.encode():
                raise ValueError(f"key {key[:64]!r} is not the record's rule")
        except Exception as exc:  # noqa: BLE001 - untrusted input: refuse, count, go on
            self.ctx.counters.inc("budget_records_invalid")
            log.error("budget: ignoring a bad spend record at %s: %s", where, str(exc)[:300])
            return
        verdict = self.ledger.apply(record)
        future = self._verdicts.get(record.reservation)
        if verdict is not None and future is not None and not future.done():
            future.set_result(verdict)

    async def follow(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker went away: read again from the start
                log.error("budget: following %s failed (%s: %s); retrying in %g s", topics.BUDGET_SPEND,
                          type(exc).__name__, exc, self.retry_s)
            await asyncio.sleep(self.retry_s)

    async def _follow(self) -> None:
        consumer = tail_consumer(self.bootstrap, SPEND_RECORD_MAX_BYTES, aiokafka_options(self.ctx.settings))
        await consumer.start()
        try:
            if not await assign_all(consumer, topics.BUDGET_SPEND):
                log.warning("budget: topic %s does not exist yet; waiting for it", topics.BUDGET_SPEND)
                return
            self.ledger.reset()
            while True:
                for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                    for message in messages:
                        self.on_record(message.value, message.key, f"{tp.topic}[{tp.partition}]@{message.offset}")
        finally:
            await consumer.stop()


def budget_service_class(budget: SharedBudget) -> type[Service]:
    class BudgetLedgerService(Service):
        """Started and stopped with the Faust app (`app.service`)."""

        async def on_start(self) -> None:
            self.add_future(budget.follow())

    return BudgetLedgerService
