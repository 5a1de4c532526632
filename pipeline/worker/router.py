"""Router agents: a TraceBatch of closed traces -> a decision for every (rule, trace), the sampled traces'
job batches bundled in a few messages, and each trace's turn to the session assembler when it carries a
session id; a BackfillBatch of stored traces -> the same for the rules it names, marked `source=backfill`
(no turns: their sessions are stored)."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import topics
from pipeline.contracts import (
    BackfillBatch,
    Decision,
    DecisionOutcome,
    ScoreJobBatch,
    SessionTurns,
    Trace,
    TraceBatch,
    decode,
    encode,
)
from pipeline.contracts.transcript import turn_from_trace
from pipeline.errors import OversizedError
from pipeline.routing import route_backfill, route_trace
from pipeline.worker.bundles import send_decisions, send_job_bundles
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)

JOB_BUNDLE_OVERHEAD = len(b'{"v":1,"batches":[]}')


class Router:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def handle(self, event: Any) -> None:
        """A TraceBatch -> one job bundle and a few decision batches for all its traces. A trace that
        fails to route is dead-lettered alone; the others go on."""
        message = event.message
        try:
            batch = decode(message.value, TraceBatch, max_bytes=self.ctx.settings.max_message_bytes)
        except Exception as exc:  # noqa: BLE001 - an undecodable message becomes a dead letter
            log.error("router: dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)
            await self.ctx.dead_letter(dead_letter_for("router", message, exc))
            return
        jobs: list[tuple[str, bytes]] = []
        decisions: list[Decision] = []
        routed_traces: list[Trace] = []
        queued = 0
        limit = self.ctx.settings.max_message_bytes
        for trace in batch.traces:
            try:
                routed = route_trace(trace, self.ctx.ruleset, self.ctx.scorers)
                trace_decisions = routed.decisions
                for code in routed.refused:
                    self.ctx.counters.inc("evaluation_requests_refused", reason=code)
                if routed.jobs:
                    encoded = encode(ScoreJobBatch(trace=trace, jobs=routed.jobs))
                    if len(encoded) + JOB_BUNDLE_OVERHEAD > limit:
                        trace_decisions = await self._refuse_oversized(message, trace, routed.decisions, len(encoded))
                    else:
                        jobs.append((trace.trace_id, encoded))
                        queued += len(routed.jobs)
            except Exception as exc:
                log.exception("router: failed on trace %s (%s[%d]@%d)", trace.trace_id, message.topic,
                              message.partition, message.offset)
                await self.ctx.dead_letter(dead_letter_for("router", message, exc, trace_id=trace.trace_id))
                continue
            decisions.extend(trace_decisions)
            routed_traces.append(trace)
        try:
            await send_job_bundles(self.ctx, jobs, partition=message.partition)
            await send_decisions(self.ctx, decisions)
        except Exception as exc:  # Faust would ack and forget: a send that failed is a dead letter
            log.exception("router: could not send the jobs of %s[%d]@%d", message.topic, message.partition,
                          message.offset)
            await self.ctx.dead_letter(dead_letter_for("router", message, exc))
            return
        self.ctx.counters.inc("jobs_queued", queued)
        for trace in routed_traces:
            await self._send_turn(message, trace)

    async def _refuse_oversized(self, message: Any, trace: Trace, decisions: list[Decision], size: int
                                ) -> list[Decision]:
        """A trace that fits its message but not once its jobs are added: its jobs are not sent; its queued
        decisions say failed and why, and a dead letter names it."""
        reason = (f"the job batch of trace {trace.trace_id} is {size} bytes, over the "
                  f"{self.ctx.settings.max_message_bytes}-byte message limit (EVALSTREAM_MAX_MESSAGE_BYTES)")
        log.error("router: %s", reason)
        await self.ctx.dead_letter(dead_letter_for("router", message, OversizedError(reason),
                                                   trace_id=trace.trace_id))
        return [d.model_copy(update={"outcome": DecisionOutcome.FAILED, "reason": reason})
                if d.outcome == DecisionOutcome.QUEUED else d for d in decisions]

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
        for trace in batch.traces:
            try:
                routed = route_backfill(trace, self.ctx.ruleset, batch.rules)
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

