"""Router agent: Trace -> a decision for every rule, one job batch for the sampled ones."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import topics
from pipeline.contracts import DecisionBatch, ScoreJobBatch, Trace, decode, encode
from pipeline.routing import route_trace
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)


class Router:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def handle(self, event: Any) -> None:
        message = event.message
        trace_id = None
        try:
            trace = decode(message.value, Trace, max_bytes=self.ctx.settings.max_message_bytes)
            trace_id = trace.trace_id
            routed = route_trace(trace, self.ctx.ruleset)
            if routed.jobs:
                await self.ctx.send(topics.JOBS, trace.trace_id, encode(ScoreJobBatch(trace=trace, jobs=routed.jobs)))
            if routed.decisions:
                await self.ctx.send(topics.DECISIONS, trace.trace_id, encode(DecisionBatch(decisions=routed.decisions)))
            self.ctx.counters.inc("jobs_queued", len(routed.jobs))
        except Exception as exc:
            log.exception("router: failed on trace %s (%s[%d]@%d)", trace_id, message.topic, message.partition,
                          message.offset)
            await self.ctx.dead_letter(dead_letter_for("router", message, exc, trace_id=trace_id))
