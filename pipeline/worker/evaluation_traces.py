"""The scorer side of evaluation traces: run a job while recording its judges' activity, then publish that
activity as the job's evaluation trace (one whole, final SpanBatch on `evalstream.spans.v1`, keyed by its
trace id, so the assemblers close and store it like any trace) and link it from the job's result.

A job whose scorer made no judge call has no evaluation trace. A trace that cannot be sent is logged and
counted, and the result goes out without the link, so a score never points at a trace that was not sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from pipeline import topics
from pipeline.contracts import encode
from pipeline.contracts.evaluation_traces import evaluation_trace_id
from pipeline.scoring import JobOutcome
from pipeline.scoring.evaluation_trace import EvaluationTraceLimits, build_evaluation_trace
from pipeline.worker.context import WorkerContext
from scorers.judges.records import recording_judge_activity

log = logging.getLogger(__name__)

MAX_TRACE_BYTES = 1024 * 1024


class EvaluationTraces:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.enabled = ctx.settings.judge_evaluation_traces
        # half the message limit at most: the assembler sends the closed trace on with its decisions
        self.limits = EvaluationTraceLimits(max_bytes=min(MAX_TRACE_BYTES, ctx.settings.max_message_bytes // 2))

    async def run(self, job: Callable[[], Awaitable[JobOutcome]]) -> JobOutcome:
        """`job()`'s outcome, its result linked to the evaluation trace sent for it (if its judges did anything)."""
        if not self.enabled:
            return await job()
        started = time.time_ns()
        with recording_judge_activity() as activity:
            outcome = await job()
        if not activity:
            return outcome
        result = outcome.result
        trace_id = evaluation_trace_id(result.job_id)
        try:
            batch = build_evaluation_trace(trace_id, result, activity.entries, started_ns=started,
                                           ended_ns=time.time_ns(), dropped=activity.dropped, limits=self.limits)
            await self.ctx.send(topics.SPANS, trace_id, encode(batch))
        except Exception:  # the score matters more than its trace: it goes out without the link
            log.exception("scorer: the evaluation trace %s of job %s (rule %s, trace %s) was not sent", trace_id,
                          result.job_id, result.rule, result.trace_id)
            self.ctx.counters.inc("evaluation_traces", outcome="failed")
            return outcome
        self.ctx.counters.inc("evaluation_traces", outcome="sent")
        outcome.result = result.model_copy(update={"evaluation_trace_id": trace_id})
        return outcome
