"""Backfill router: a BackfillBatch of stored traces -> a decision for every (rule it names, trace), the
sampled traces' job batches bundled per partition, marked `source=backfill` (no turns: their sessions are
stored). Live traces are routed where they close (`worker/close_router.py`)."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import topics
from pipeline.contracts import (
    BackfillBatch,
    Decision,
    ScoreJobBatch,
    decode,
    encode,
)
from pipeline.routing import route_backfill
from pipeline.worker.bundles import send_decisions, send_job_bundles
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)

class BackfillRouter:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def handle(self, event: Any) -> None:
        """The sampled traces' job batches, bundled per partition of their trace ids so scorers share them
        as they share live jobs; the decisions of the whole message in a few batches. A trace that fails
        is dead-lettered alone."""
        message = event.message
        try:
            batch = decode(message.value, BackfillBatch, max_bytes=self.ctx.settings.max_message_bytes)
        except Exception as exc:  # noqa: BLE001 - an undecodable message becomes a dead letter
            log.error("backfill-router: dead-lettering %s[%d]@%d: %s", message.topic, message.partition,
                      message.offset, exc)
            await self.ctx.dead_letter(dead_letter_for("backfill-router", message, exc))
            return
        decisions: list[Decision] = []
        by_partition: dict[int, list[tuple[str, bytes]]] = {}
        jobs = 0
        partitions = self.ctx.settings.topic_partitions
        rules = self.ctx.rules  # one version for the whole message
        for trace in batch.traces:
            try:
                routed = route_backfill(trace, rules.ruleset, batch.rules, rules_version=rules.version)
                if routed.jobs:
                    by_partition.setdefault(topics.partition_for(trace.trace_id, partitions), []).append(
                        (trace.trace_id, encode(ScoreJobBatch(trace=trace, jobs=routed.jobs))))
                decisions.extend(routed.decisions)
                jobs += len(routed.jobs)
            except Exception as exc:
                log.exception("backfill-router: failed on trace %s of backfill %s (%s[%d]@%d)", trace.trace_id,
                              batch.backfill_id, message.topic, message.partition, message.offset)
                await self.ctx.dead_letter(dead_letter_for("backfill-router", message, exc,
                                                           trace_id=trace.trace_id))
        for partition, parts in by_partition.items():  # the trace's own partition, as live jobs go
            await send_job_bundles(self.ctx, parts, partition=partition)
        await send_decisions(self.ctx, decisions)
        self.ctx.counters.inc("jobs_queued", jobs)
        self.ctx.counters.inc("backfill_traces", len(batch.traces))

