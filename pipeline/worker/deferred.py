"""Deferred jobs: hold a ScoreJobBatch until its `not_before_ns`, then hand it back to the scorers.

A Kafka delay queue: the agent runs with concurrency so one long wait does not hold the others,
and never sleeps more than `defer_max_sleep_s` per message (a longer wait goes round again), so a
rebalance is never stuck behind an hour-long sleep. The scorer re-checks the budget on return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pipeline import topics
from pipeline.contracts import ScoreJobBatch, ScoreJobBundle, decode, encode
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)


class DeferredJobs:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            batch = decode(message.value, ScoreJobBatch, max_bytes=self.ctx.settings.max_message_bytes)
        except Exception as exc:  # noqa: BLE001 - any undecodable job becomes a dead letter
            log.error("deferred: dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset,
                      exc)
            await self.ctx.dead_letter(dead_letter_for("deferred", message, exc))
            return
        wait_s = batch.not_before_ns / 1e9 - time.time()
        if wait_s > 0:
            await asyncio.sleep(min(wait_s, self.ctx.settings.defer_max_sleep_s))
        trace_id = batch.trace.trace_id
        if time.time_ns() < batch.not_before_ns:
            await self.ctx.send(topics.JOBS_DEFERRED, trace_id, message.value)
            return
        await self.ctx.send(topics.JOBS, trace_id, encode(ScoreJobBundle(batches=[batch])))
        self.ctx.counters.inc("jobs_resumed")
