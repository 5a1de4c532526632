"""Many traces' jobs and decisions in few messages: one event downstream per bundle, not per trace."""

from __future__ import annotations

from pipeline import topics
from pipeline.contracts import Decision, encode, pack_items
from pipeline.worker.context import WorkerContext


async def send_job_bundles(ctx: WorkerContext, jobs: list[tuple[str, bytes]], *, partition: int | None) -> None:
    """Encoded ScoreJobBatches of (trace id, bytes) -> ScoreJobBundle messages, keyed by their first trace."""
    for value, first in pack_items("batches", [raw for _, raw in jobs], ctx.settings.max_message_bytes):
        await ctx.send(topics.JOBS, jobs[first][0], value, partition=partition)


async def send_decisions(ctx: WorkerContext, decisions: list[Decision]) -> None:
    """DecisionBatches under the message limit, keyed by their first trace."""
    parts = [encode(d) for d in decisions]
    for value, first in pack_items("decisions", parts, ctx.settings.max_message_bytes):
        await ctx.send(topics.DECISIONS, decisions[first].trace_id, value)
