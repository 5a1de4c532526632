"""Scorer agent: runs a bundle's jobs concurrently (bounded per process) and always emits a result per job.

It sends results only: the sink stores each result's `scored` or `failed` decision from the result.

A job of a rule with a budget first reserves its estimate on the shared spend ledger (`worker/budget_ledger.py`,
one ledger for every scorer process). A job whose reservation is not granted is not run: it goes to the
deferred topic with the time its budget frees up, and its decision row says so. `worker/deferred.py` sends it
back then. After a job runs, its reservation is settled with what its judges spent.
"""

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
    ScoreJobBundle,
    decode,
    encode,
    pack_items,
)
from pipeline.rules.model import Budget
from pipeline.sampling import SDK_RULE_PREFIX
from pipeline.scoring import JobOutcome, ScorerCache, run_job
from pipeline.scoring.budget import Spend
from pipeline.worker.budget_ledger import SharedBudget
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for
from pipeline.worker.evaluation_traces import EvaluationTraces

log = logging.getLogger(__name__)


def metric_rule(rule: str) -> str:
    """The `rule` label of a metric: a rules-file rule by name; every span request as `sdk:*`, because its
    scorer name comes from the span, and a label per producer-chosen name would grow without bound."""
    return f"{SDK_RULE_PREFIX}*" if rule.startswith(SDK_RULE_PREFIX) else rule


class ScorerWorker:
    def __init__(self, ctx: WorkerContext, budget: SharedBudget | None = None) -> None:
        self.ctx = ctx
        self.budget = budget  # the shared spend ledger (`worker/budget_ledger.py`); only budgeted rules use it
        self.cache = ScorerCache(ctx.scorers, ctx.settings.scorer_cache_size)
        self.slots = asyncio.Semaphore(ctx.settings.scorer_concurrency)
        self.running = 0
        # Budgeted waves of all the agent's concurrent copies take turns: a wave's reservations are written and
        # read back before the next wave's, so its jobs are counted (as estimates) before the next is admitted.
        self.budget_turn = asyncio.Lock()
        self.evaluation_traces = EvaluationTraces(ctx)

    async def _run(self, job: ScoreJob, batch: ScoreJobBatch) -> JobOutcome:
        async with self.slots:
            self.running += 1
            self.ctx.counters.set("jobs_running", self.running)
            try:
                return await self.evaluation_traces.run(
                    lambda: run_job(job, batch.trace, self.cache, self.ctx.retry_policy))
            finally:
                self.running -= 1
                self.ctx.counters.set("jobs_running", self.running)
                self.ctx.counters.set("scorer_cache_entries", len(self.cache))

    async def handle(self, event: Any) -> None:
        """A ScoreJobBundle -> every job run (bounded by the process's slots), one result batch for the whole
        bundle (split only under the message limit). No decisions: the sink derives each result's `scored` or
        `failed` decision from the result itself (`contracts.result_decision`)."""
        message = event.message
        try:
            bundle = decode(message.value, ScoreJobBundle, max_bytes=self.ctx.settings.max_message_bytes)
        except Exception as exc:  # noqa: BLE001 - any undecodable job becomes a dead letter
            log.error("scorer: dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)
            await self.ctx.dead_letter(dead_letter_for("scorer", message, exc))
            return
        outcomes = await self._run_bundle(bundle, message)
        if not outcomes:
            return
        results = [o.result for o in outcomes]
        max_bytes = self.ctx.settings.max_message_bytes
        for value, first in pack_items("results", [encode(r) for r in results], max_bytes):
            await self.ctx.send(topics.SCORES, results[first].trace_id, value)
        for outcome in outcomes:
            status = outcome.result.status.value
            self.ctx.counters.inc("scores", status=status, rule=metric_rule(outcome.result.rule))
            if outcome.dead_letter:
                await self.ctx.dead_letter(dead_letter_for("scorer", message, _GaveUp(outcome),
                                                           trace_id=outcome.result.trace_id,
                                                           job_id=outcome.result.job_id))

    async def _run_bundle(self, bundle: ScoreJobBundle, message: Any) -> list[JobOutcome]:
        """Jobs of rules without a budget all at once, without touching the ledger. Jobs of budgeted rules in
        waves of at most `scorer_concurrency` traces, one wave at a time in this process: each job reserves
        its estimate on the shared ledger, runs if the reservation is granted, and settles what it spent;
        the others are deferred. A trace whose budget check fails (its deferral could not be sent) is
        dead-lettered alone; the results of the others still go out."""
        def budgeted(job: ScoreJob) -> bool:
            return self.ctx.ruleset.budget_of(job.rule) is not None

        free = asyncio.gather(*(self._run(job, batch) for batch in bundle.batches for job in batch.jobs
                                if not budgeted(job)))
        waiting = [(batch, jobs) for batch in bundle.batches if (jobs := [j for j in batch.jobs if budgeted(j)])]
        outcomes: list[JobOutcome] = []
        wave = max(1, self.ctx.settings.scorer_concurrency)
        try:
            for start in range(0, len(waiting), wave):
                async with self.budget_turn:
                    runnable = await self._admit(waiting[start:start + wave], message)
                    done = await asyncio.gather(*(self._run(job, batch) for job, batch, _ in runnable))
                    for (job, _, reservation), outcome in zip(runnable, done, strict=True):
                        await self._settle(job, reservation, outcome)
                    outcomes += done
        finally:
            unbudgeted = await free
        return [*unbudgeted, *outcomes]

    async def _admit(self, wave: list[tuple[ScoreJobBatch, list[ScoreJob]]], message: Any
                     ) -> list[tuple[ScoreJob, ScoreJobBatch, str]]:
        """Reserve every job of the wave at once (one round trip through the topic); defer, per trace, the
        jobs whose reservation was not granted. Returns the granted ones with their reservation ids."""
        if self.budget is None:
            raise RuntimeError("a budgeted rule's job reached a scorer without the shared budget ledger")
        wanted = [(job, batch, budget) for batch, jobs in wave for job in jobs
                  if (budget := self.ctx.ruleset.budget_of(job.rule)) is not None]
        try:
            reservations = await self.budget.reserve([(job.rule, budget) for job, _, budget in wanted])
        except Exception:
            log.exception("scorer: reserving budget for %d job(s) failed; deferring them", len(wanted))
            reservations = [None] * len(wanted)
        runnable: list[tuple[ScoreJob, ScoreJobBatch, str]] = []
        refused: dict[int, list[tuple[ScoreJob, Budget]]] = {}
        for (job, batch, budget), reservation in zip(wanted, reservations, strict=True):
            if reservation is not None:
                runnable.append((job, batch, reservation))
            else:
                refused.setdefault(id(batch), []).append((job, budget))
        for batch, _ in wave:
            if id(batch) not in refused:
                continue
            try:
                await self._defer(batch, refused[id(batch)])
            except Exception as exc:
                log.exception("scorer: budget check of trace %s failed", batch.trace.trace_id)
                await self.ctx.dead_letter(dead_letter_for("scorer", message, exc, trace_id=batch.trace.trace_id))
        return runnable

    async def _settle(self, job: ScoreJob, reservation: str, outcome: JobOutcome) -> None:
        assert self.budget is not None
        await self.budget.settle(job.rule, reservation, Spend.from_metadata(outcome.result.metadata))

    async def _defer(self, batch: ScoreJobBatch, jobs: list[tuple[ScoreJob, Budget]]) -> None:
        """Send a trace's `jobs` whose rules are over budget to the deferred topic, with their decisions."""
        assert self.budget is not None
        ledger = self.budget.ledger
        now_ns = time.time_ns()
        # Not before the ledger frees up, nor within a second: a job refused in the topic's order (or whose
        # reservation was not read back) while this process's view has room does not come straight back.
        soonest = now_ns / 1e9 + 1.0
        not_before = 0.0
        decisions: list[Decision] = []
        for job, budget in jobs:
            until = max(ledger.blocked_until(job.rule, budget, now_ns), soonest)
            not_before = max(not_before, until)
            decisions.append(Decision(
                rule=job.rule, trace_id=job.trace_id, trace_version=job.trace_version, span_id=job.span_id,
                request_index=job.request_index, outcome=DecisionOutcome.DEFERRED, job_id=job.job_id, source=job.source,
                project=batch.trace.project, decided_at_ns=time.time_ns(), rules_version=job.rules_version,
                reason=f"{ledger.describe(job.rule, budget, now_ns)}; runs after "
                       f"{time.strftime('%H:%M:%S', time.gmtime(until))} UTC (deferral {batch.deferrals + 1})",
            ))
        trace_id = batch.trace.trace_id
        later = ScoreJobBatch(trace=batch.trace, jobs=[job for job, _ in jobs], not_before_ns=int(not_before * 1e9),
                              deferrals=batch.deferrals + 1)
        await self.ctx.send(topics.JOBS_DEFERRED, trace_id, encode(later))
        await self.ctx.send(topics.DECISIONS, trace_id, encode(DecisionBatch(decisions=decisions)))
        for job, _ in jobs:
            self.ctx.counters.inc("jobs_deferred", rule=job.rule)
        log.info("scorer: deferred %d job(s) of trace %s until the budget refills", len(jobs), trace_id)


class _GaveUp(Exception):
    """Retries exhausted; the message names the last error."""

    def __init__(self, outcome: JobOutcome) -> None:
        r = outcome.result
        super().__init__(f"gave up after {r.attempts} attempts: {r.error_type}: {r.error_message}")
