"""Router agents: a closed Trace -> a decision for every rule, one job batch for the sampled ones, and
its turn to the session assembler when it carries a session id; a BackfillBatch of stored traces ->
the same for the rules it names, marked `source=backfill` (no turns: their sessions are stored)."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import topics
from pipeline.contracts import (
    BackfillBatch,
    Decision,
    DecisionBatch,
    ScoreJobBatch,
    SessionTurns,
    Trace,
    decode,
    encode,
)
from pipeline.routing import route_backfill, route_trace
from pipeline.sessions.transcript import turn_from_trace
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)

DECISIONS_PER_MESSAGE = 2000


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
            return
        await self._send_turn(message, trace)

    async def _send_turn(self, message: Any, trace: Trace) -> None:
        """A trace with a session id is a turn of a conversation: to its session's assembler. Apart from
        routing, so a bad turn (say, a session id too long to be one) is dead-lettered alone, stage
        `session-turn`, and the trace's jobs and decisions, already sent, are not routed again on replay."""
        try:
            turn = turn_from_trace(trace)
            if turn is not None:
                await self.ctx.send(topics.SESSION_TURNS, turn.session_id,
                                    encode(SessionTurns(session_id=turn.session_id, turns=[turn])))
        except Exception as exc:
            log.exception("router: trace %s is not a valid turn of its session", trace.trace_id)
            await self.ctx.dead_letter(dead_letter_for("session-turn", message, exc, trace_id=trace.trace_id))

    async def handle_backfill(self, event: Any) -> None:
        """One job batch per sampled trace, keyed by trace id so scorers share them by partition; the
        decisions of the whole message in a few batches. A trace that fails is dead-lettered alone."""
        message = event.message
        try:
            batch = decode(message.value, BackfillBatch, max_bytes=self.ctx.settings.max_message_bytes)
        except Exception as exc:  # noqa: BLE001 - an undecodable message becomes a dead letter
            log.error("backfill-router: dead-lettering %s[%d]@%d: %s", message.topic, message.partition,
                      message.offset, exc)
            await self.ctx.dead_letter(dead_letter_for("backfill-router", message, exc))
            return
        decisions: list[Decision] = []
        jobs = 0
        for trace in batch.traces:
            try:
                routed = route_backfill(trace, self.ctx.ruleset, batch.rules)
                if routed.jobs:
                    await self.ctx.send(topics.JOBS, trace.trace_id,
                                        encode(ScoreJobBatch(trace=trace, jobs=routed.jobs)))
                decisions.extend(routed.decisions)
                jobs += len(routed.jobs)
            except Exception as exc:
                log.exception("backfill-router: failed on trace %s of backfill %s (%s[%d]@%d)", trace.trace_id,
                              batch.backfill_id, message.topic, message.partition, message.offset)
                await self.ctx.dead_letter(dead_letter_for("backfill-router", message, exc,
                                                           trace_id=trace.trace_id))
        for start in range(0, len(decisions), DECISIONS_PER_MESSAGE):
            chunk = decisions[start:start + DECISIONS_PER_MESSAGE]
            await self.ctx.send(topics.DECISIONS, chunk[0].trace_id, encode(DecisionBatch(decisions=chunk)))
        self.ctx.counters.inc("jobs_queued", jobs)
        self.ctx.counters.inc("backfill_traces", len(batch.traces))
