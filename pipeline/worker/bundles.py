"""Many traces' jobs and decisions in few messages: one event downstream per bundle, not per trace."""

from __future__ import annotations

from pipeline import topics
from pipeline.contracts import Decision, DecisionBatch, encode, pack_items
from pipeline.worker.context import WorkerContext

DECISIONS_PER_MESSAGE = 2000


async def send_job_bundles(ctx: WorkerContext, jobs: list[tuple[str, bytes]], *, partition: int | None) -> None:
    """Encoded ScoreJobBatches of (trace id, bytes) -> ScoreJobBundle messages, keyed by their first trace."""
    for value, first in pack_items("batches", [raw for _, raw in jobs], ctx.settings.max_message_bytes):
        await ctx.send(topics.JOBS, jobs[first][0], value, partition=partition)


async def send_decisions(ctx: WorkerContext, decisions: list[Decision]) -> None:
    for start in range(0, len(decisions), DECISIONS_PER_MESSAGE):
        chunk = decisions[start:start + DECISIONS_PER_MESSAGE]
        await ctx.send(topics.DECISIONS, chunk[0].trace_id, encode(DecisionBatch(decisions=chunk)))
