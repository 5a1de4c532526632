"""Scorer agent: runs a trace's jobs concurrently (bounded per process) and always emits a result per job."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pipeline import topics
from pipeline.contracts import (
    Decision,
    DecisionBatch,
    DecisionOutcome,
    ScoreJob,
    ScoreJobBatch,
    ScoreResultBatch,
    ScoreStatus,
    decode,
    encode,
)
from pipeline.scoring import JobOutcome, ScorerCache, run_job
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)


class ScorerWorker:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.cache = ScorerCache()
        self.slots = asyncio.Semaphore(ctx.settings.scorer_concurrency)
        self.running = 0

    async def _run(self, job: ScoreJob, batch: ScoreJobBatch) -> JobOutcome:
        async with self.slots:
            self.running += 1
            try:
                return await run_job(job, batch.trace, self.cache, self.ctx.settings.retry_policy)
            finally:
                self.running -= 1

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            batch = decode(message.value, ScoreJobBatch, max_bytes=self.ctx.settings.max_message_bytes)
        except Exception as exc:  # noqa: BLE001 - any undecodable job becomes a dead letter
            log.error("scorer: dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)
            await self.ctx.dead_letter(dead_letter_for("scorer", message, exc))
            return
        outcomes = await asyncio.gather(*(self._run(job, batch) for job in batch.jobs))
        results = [o.result for o in outcomes]
        now = time.time_ns()
        decisions = [
            Decision(
                rule=r.rule, trace_id=r.trace_id, trace_version=r.trace_version,
                outcome=DecisionOutcome.SCORED if r.status == ScoreStatus.SCORED else DecisionOutcome.FAILED,
                reason=r.reason if r.status == ScoreStatus.SCORED else f"{r.error_type}: {r.error_message}"[:500],
                job_id=r.job_id, project=r.project, source=r.source, decided_at_ns=now,
            )
            for r in results
        ]
        trace_id = batch.trace.trace_id
        await self.ctx.send(topics.SCORES, trace_id, encode(ScoreResultBatch(results=results)))
        await self.ctx.send(topics.DECISIONS, trace_id, encode(DecisionBatch(decisions=decisions)))
        for outcome in outcomes:
            status = outcome.result.status.value
            self.ctx.counters.inc("scores", status=status, rule=outcome.result.rule)
            if outcome.dead_letter:
                await self.ctx.dead_letter(dead_letter_for("scorer", message, _GaveUp(outcome), trace_id=trace_id,
                                                           job_id=outcome.result.job_id))


class _GaveUp(Exception):
    """Retries exhausted; the message names the last error."""

    def __init__(self, outcome: JobOutcome) -> None:
        r = outcome.result
        super().__init__(f"gave up after {r.attempts} attempts: {r.error_type}: {r.error_message}")
