"""Session scorer agent: runs a session version's jobs and emits a result per job.

The scorer gets a `Conversation` (the turns so far, their transcript, and a loader for any turn's
trace). A look after a turn that reaches a verdict (passed is not None) tells the session assembler
that the rule is done with this version, so later turns are not judged again until the closing
verdict. Closing verdicts also update the (rule, session) decision: the sink derives it from the result.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pipeline import topics
from pipeline.contracts import (
    RuleFinished,
    ScoreResultBatch,
    ScoreStatus,
    SessionJobBatch,
    SessionTurns,
    decode,
    encode,
)
from pipeline.contracts.conversation import Conversation, TraceLoader
from pipeline.scoring import ScorerCache, run_session_job
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for
from pipeline.worker.evaluation_traces import EvaluationTraces

log = logging.getLogger(__name__)


class SessionScorer:
    def __init__(self, ctx: WorkerContext, cache: ScorerCache, slots: asyncio.Semaphore,
                 load_trace: TraceLoader | None) -> None:
        self.ctx = ctx
        self.cache = cache
        self.slots = slots  # shared with trace jobs: one concurrency limit per process
        self.load_trace = load_trace
        self.evaluation_traces = EvaluationTraces(ctx)

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            batch = decode(message.value, SessionJobBatch, max_bytes=self.ctx.settings.max_message_bytes)
        except Exception as exc:  # noqa: BLE001 - any undecodable job becomes a dead letter
            log.error("session-scorer: dead-lettering %s[%d]@%d: %s", message.topic, message.partition,
                      message.offset, exc)
            await self.ctx.dead_letter(dead_letter_for("session-scorer", message, exc))
            return
        session = batch.session
        policy = self.ctx.retry_policy

        async def run(job: Any) -> Any:
            conversation = Conversation(session=session, final=job.final, load_trace=self.load_trace)
            async with self.slots:
                return await self.evaluation_traces.run(
                    lambda: run_session_job(job, conversation, self.cache, policy))

        outcomes = await asyncio.gather(*(run(job) for job in batch.jobs))
        if not outcomes:
            return
        results = [o.result for o in outcomes]
        key = session.session_id
        # The closing verdicts' decisions are not sent: the sink derives them from these results.
        await self.ctx.send(topics.SCORES, key, encode(ScoreResultBatch(results=results)))
        finished = [RuleFinished(rule=r.rule, session_version=session.version, turn=r.turn or 0)
                    for r in results if not r.final and r.status == ScoreStatus.SCORED and r.passed is not None]
        if finished:
            await self.ctx.send(topics.SESSION_TURNS, key,
                                encode(SessionTurns(session_id=key, finished=finished)))
            for r in finished:
                log.info("session %s v%d: rule %s reached its verdict after turn %d", key, session.version,
                         r.rule, r.turn)
        for outcome in outcomes:
            self.ctx.counters.inc("scores", status=outcome.result.status.value, rule=outcome.result.rule)
            if outcome.dead_letter:
                await self.ctx.dead_letter(dead_letter_for(
                    "session-scorer", message, RuntimeError(outcome.result.error_message or "gave up"),
                    trace_id=outcome.result.trace_id, job_id=outcome.result.job_id))
