"""Routing in the event that closes traces: each closed version is filtered and sampled against every rule
right where the assembler closed it, and what follows goes out at once: the sampled traces' job bundles,
then one TraceBatch carrying the traces with their decisions (for the sink), then the turns of traces that
belong to a conversation. No hop reads the closed traces back to route them.

The trace travels in its job batch as the bytes the assembler wrote: it is validated once, here, and not
dumped again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline import topics
from pipeline.contracts import (
    Decision,
    DecisionOutcome,
    SessionTurns,
    Span,
    Trace,
    encode,
    pack_groups,
)
from pipeline.contracts.transcript import turn_from_trace
from pipeline.errors import OversizedError
from pipeline.routing import route_trace
from pipeline.rules.versions import ActiveRules
from pipeline.worker.bundles import send_job_bundles
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)

JOB_BUNDLE_OVERHEAD = len(b'{"v":1,"batches":[]}')
TRACE_FIELDS = ("traces", "decisions")


@dataclass
class Closed:
    """A closed version as the assembler wrote it (`raw`, the JSON of `payload`), ready to route."""

    trace_id: str
    raw: bytes
    payload: dict[str, Any]
    # The payload's spans as the Span objects the assembler validated them into in this event, where each span
    # dict is the dump of its object (`Assembler._merge`); None: validated from the payload.
    spans: list[Span] | None = None


@dataclass
class Progress:
    """How many of the closed traces have gone out in TraceBatches: after a failed send, the rest re-open."""

    sent: int = 0


@dataclass
class _Routed:
    closed: Closed
    trace: Trace | None  # None: it could not be routed (dead-lettered); it is still stored
    decisions: list[bytes] = field(default_factory=list)
    job_batch: bytes | None = None
    jobs: int = 0


def job_batch_bytes(trace_raw: bytes, jobs: Sequence[Any]) -> bytes:
    """A ScoreJobBatch's JSON around the trace's bytes as they are: the same message `encode(ScoreJobBatch(...))`
    gives, without dumping the trace a second time."""
    encoded = b",".join(orjson.dumps(j.model_dump(mode="json", exclude_none=True)) for j in jobs)
    return b'{"v":1,"trace":' + trace_raw + b',"jobs":[' + encoded + b"]}"


class CloseRouter:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def publish(self, source: Any, closed: Sequence[Closed], partition: int, progress: Progress) -> None:
        """Route `closed` and send their jobs (to `partition` of the jobs topic, as the traces' own) and the
        TraceBatch messages (to `partition` of the traces topic). `progress.sent` counts the closed traces
        that went out, so that after a failed send (raised) the caller re-opens the rest. `source`: the
        message being handled, named in dead letters."""
        rules = self.ctx.rules  # one version for the whole event, even if a switch lands while it is handled
        routed = [await self._route(source, c, rules) for c in closed]
        jobs = [(r.closed.trace_id, r.job_batch) for r in routed if r.job_batch is not None]
        await send_job_bundles(self.ctx, jobs, partition=partition)  # a failure here: nothing went out
        groups = [([r.closed.raw], r.decisions) for r in routed]
        packed = list(pack_groups(TRACE_FIELDS, groups, self.ctx.settings.max_message_bytes))
        for k, (value, first) in enumerate(packed):
            await self.ctx.send(topics.TRACES, closed[first].trace_id, value, partition=partition)
            progress.sent = packed[k + 1][1] if k + 1 < len(packed) else len(closed)
        self.ctx.counters.inc("jobs_queued", sum(r.jobs for r in routed))
        for r in routed:
            if r.trace is not None:
                await self._send_turn(source, r.trace)

    async def _route(self, source: Any, closed: Closed, rules: ActiveRules) -> _Routed:
        """One trace against every rule and its spans' evaluation requests. A trace that fails to route is
        dead-lettered (stage `router`) and stored without decisions; the others go on."""
        try:
            # The spans validated at the edge are taken as they are (pydantic does not revalidate a model
            # instance): each dict of the payload is the dump of its object, so validating it again would give
            # the same Span. The rest of the payload (the assembler's own fields) is validated.
            trace = Trace.model_validate(closed.payload if closed.spans is None
                                         else {**closed.payload, "spans": closed.spans})
            routed = route_trace(trace, rules.ruleset, self.ctx.scorers, rules_version=rules.version)
            for code in routed.refused:
                self.ctx.counters.inc("evaluation_requests_refused", reason=code)
            decisions = routed.decisions
            job_batch = None
            jobs = len(routed.jobs)
            if routed.jobs:
                job_batch = job_batch_bytes(closed.raw, routed.jobs)
                if len(job_batch) + JOB_BUNDLE_OVERHEAD > self.ctx.settings.max_message_bytes:
                    decisions = await self._refuse_oversized(source, trace, decisions, len(job_batch))
                    job_batch, jobs = None, 0
            return _Routed(closed, trace, [encode(d) for d in decisions], job_batch, jobs)
        except Exception as exc:
            log.exception("router: failed on trace %s (%s[%d]@%d)", closed.trace_id, source.topic, source.partition,
                          source.offset)
            await self.ctx.dead_letter(dead_letter_for("router", source, exc, trace_id=closed.trace_id))
            return _Routed(closed, None)

    async def _refuse_oversized(self, source: Any, trace: Trace, decisions: list[Decision], size: int
                                ) -> list[Decision]:
        """A trace that fits its message but not once its jobs are added: its jobs are not sent; its queued
        decisions say failed and why, and a dead letter names it."""
        reason = (f"the job batch of trace {trace.trace_id} is {size} bytes, over the "
                  f"{self.ctx.settings.max_message_bytes}-byte message limit (EVALSTREAM_MAX_MESSAGE_BYTES)")
        log.error("router: %s", reason)
        await self.ctx.dead_letter(dead_letter_for("router", source, OversizedError(reason), trace_id=trace.trace_id))
        return [d.model_copy(update={"outcome": DecisionOutcome.FAILED, "reason": reason})
                if d.outcome == DecisionOutcome.QUEUED else d for d in decisions]

    async def _send_turn(self, source: Any, trace: Trace) -> None:
        """A trace with a session id is a turn of a conversation: to its session's assembler. Apart from
        routing, so a bad turn (say, a session id too long to be one) is dead-lettered alone, stage
        `session-turn`, and the trace's jobs and decisions, already sent, are not routed again."""
        try:
            turn = turn_from_trace(trace)
            if turn is not None:
                await self.ctx.send(topics.SESSION_TURNS, turn.session_id,
                                    encode(SessionTurns(session_id=turn.session_id, turns=[turn])))
        except Exception as exc:
            log.exception("router: trace %s is not a valid turn of its session", trace.trace_id)
            await self.ctx.dead_letter(dead_letter_for("session-turn", source, exc, trace_id=trace.trace_id))

