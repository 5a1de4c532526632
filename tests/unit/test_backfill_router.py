"""pipeline/worker/router.py, the backfill agent: a job batch per sampled trace, bundled by partition, decisions
batched, failures dead-lettered. No broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from pipeline import topics
from pipeline.backfill.publisher import pack
from pipeline.contracts import (
    DeadLetter,
    DecisionBatch,
    DecisionOutcome,
    JobSource,
    ScoreJobBundle,
    Span,
    Trace,
    decode,
)
from pipeline.metrics import Counters
from pipeline.rules import parse_rules
from pipeline.rules.versions import ActiveRules
from pipeline.sampling import is_sampled
from pipeline.worker.router import BackfillRouter
from scorers.testing import resolver

RULES = parse_rules({"rules": [
    {"name": "half", "scorer": "error_spans", "sampling_rate": 0.5},
    {"name": "live-only", "scorer": "error_spans"},
]})


class FakeContext:
    def __init__(self) -> None:
        self.settings = SimpleNamespace(max_message_bytes=1024 * 1024, topic_partitions=8)
        self.rules = ActiveRules.of(RULES)
        self.ruleset = RULES
        self.scorers = resolver()
        self.counters = Counters()
        self.sent: list[tuple[str, str, bytes]] = []
        self.sent_to: list[tuple[str, str, bytes, int | None]] = []
        self.dead: list[DeadLetter] = []

    async def send(self, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
        self.sent.append((topic, key, value))
        self.sent_to.append((topic, key, value, partition))

    async def dead_letter(self, dl: DeadLetter) -> None:
        self.dead.append(dl)


def event(value: bytes) -> Any:
    return SimpleNamespace(message=SimpleNamespace(value=value, key=b"bf:1", topic=topics.BACKFILL, partition=2,
                                                   offset=7))


def trace(i: int) -> dict[str, Any]:
    tid = f"t-{i}"
    span = Span(trace_id=tid, span_id="r", name="root", start_ns=0, end_ns=10)
    return Trace(trace_id=tid, version=1, status="complete", close_reason="final_marker", root_span_id="r",
                 spans=[span]).model_dump(mode="json")


async def test_a_backfill_message_becomes_job_batches_per_trace_and_its_decisions() -> None:
    ctx = FakeContext()
    (message,) = pack("bf", ["half"], [trace(i) for i in range(40)], max_bytes=1024 * 1024).messages
    await BackfillRouter(ctx).handle(event(message))  # type: ignore[arg-type]

    bundles = [(key, partition, decode(value, ScoreJobBundle)) for topic, key, value, partition in ctx.sent_to
               if topic == topics.JOBS]
    sampled = {f"t-{i}" for i in range(40) if is_sampled(f"t-{i}", "half", 0.5)}
    jobs = [batch for _, _, bundle in bundles for batch in bundle.batches]
    assert sorted(batch.trace.trace_id for batch in jobs) == sorted(sampled)  # each sampled trace once
    for key, partition, bundle in bundles:  # bundled by the partition of their trace ids: scorers share them
        assert key == bundle.batches[0].trace.trace_id
        assert {topics.partition_for(b.trace.trace_id, 8) for b in bundle.batches} == {partition}
    for batch in jobs:
        assert [j.rule for j in batch.jobs] == ["half"]
        assert batch.jobs[0].source == JobSource.BACKFILL
    decisions = [d for topic, _, value in ctx.sent if topic == topics.DECISIONS
                 for d in decode(value, DecisionBatch).decisions]
    assert len(decisions) == 40 and {d.rule for d in decisions} == {"half"}  # not the other rule
    assert {d.trace_id for d in decisions if d.outcome == DecisionOutcome.QUEUED} == sampled
    assert ctx.counters.get("backfill_traces") == 40 and ctx.dead == []


async def test_an_undecodable_backfill_message_is_dead_lettered() -> None:
    ctx = FakeContext()
    await BackfillRouter(ctx).handle(event(orjson.dumps({"v": 1, "kind": "backfill", "rules": []})))  # type: ignore[arg-type]
    (dead,) = ctx.dead
    assert dead.stage == "backfill-router" and dead.source_topic == topics.BACKFILL and dead.offset == 7
    assert ctx.sent == []
