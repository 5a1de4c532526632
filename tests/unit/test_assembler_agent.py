"""pipeline/worker/assembler.py with a fake context and a dict for its table: SpanBundles of many traces,
a bad batch inside one, and closes sent as TraceBatches of one partition. No broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from pipeline import topics
from pipeline.assembly import AssemblyConfig
from pipeline.contracts import DeadLetter, TraceBatch, decode, pack_items
from pipeline.metrics import Counters
from pipeline.worker.assembler import TICK, TICK_KEY, Assembler
from tests.integration.harness import batch, span

PARTITIONS = 4


class FakeContext:
    def __init__(self, max_message_bytes: int = 1024 * 1024) -> None:
        self.settings = SimpleNamespace(max_message_bytes=max_message_bytes, topic_partitions=PARTITIONS)
        self.assembly = AssemblyConfig(quiet_period_s=0.0)
        self.counters = Counters()
        self.sent: list[tuple[str, bytes, bytes, int | None]] = []
        self.dead: list[DeadLetter] = []

    async def send(self, topic: str, key: str | bytes, value: bytes, partition: int | None = None) -> None:
        self.sent.append((topic, key.encode() if isinstance(key, str) else key, value, partition))

    async def dead_letter(self, dl: DeadLetter) -> None:
        self.dead.append(dl)


def event(value: bytes, partition: int, key: bytes = b"k", offset: int = 5) -> Any:
    return SimpleNamespace(message=SimpleNamespace(value=value, key=key, topic=topics.SPANS, partition=partition,
                                                   offset=offset, timestamp=0))


def ids_on(partition: int, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        if topics.partition_for(f"t{i}", PARTITIONS) == partition:
            out.append(f"t{i}")
        i += 1
    return out


def trace_batch(trace_id: str) -> bytes:
    root = span(trace_id, f"{trace_id}-r", None, "handle")
    return batch(trace_id, [root, span(trace_id, f"{trace_id}-c", root["span_id"], "tool")], final=True)


def bundle(parts: list[bytes]) -> bytes:
    ((value, _),) = pack_items("batches", parts, kind="span_bundle")
    return value


async def test_a_bundle_of_traces_closes_as_one_trace_batch_on_its_partition() -> None:
    ctx = FakeContext()
    assembler = Assembler(ctx, {})
    ids = ids_on(2, 5)
    await assembler.handle(event(bundle([trace_batch(t) for t in ids]), partition=2))
    await assembler.handle(event(TICK, partition=2, key=TICK_KEY))

    (sent,) = [s for s in ctx.sent if s[0] == topics.TRACES]
    traces = decode(sent[2], TraceBatch).traces
    assert [t.trace_id for t in traces] == ids and all(len(t.spans) == 2 for t in traces)
    assert sent[3] == 2 and sent[1] == ids[0].encode()  # on the spans' partition, keyed by its first trace
    assert ctx.dead == [] and ctx.counters.get("spans_in") == 10


async def test_a_bad_batch_in_a_bundle_is_dead_lettered_alone_and_a_strays_is_forwarded_home() -> None:
    ctx = FakeContext()
    assembler = Assembler(ctx, {})
    good = ids_on(1, 2)
    (stray,) = ids_on(3, 1)
    wrong = orjson.dumps({"v": 1, "kind": "spans", "trace_id": "", "spans": []})  # an empty trace id
    await assembler.handle(event(bundle([trace_batch(good[0]), wrong, trace_batch(stray), trace_batch(good[1])]),
                                 partition=1))
    await assembler.handle(event(TICK, partition=1, key=TICK_KEY))

    (dead,) = ctx.dead
    assert dead.item == "batches[1]" and "batches[1]: does not match SpanBatch" in dead.reason
    (forwarded,) = [s for s in ctx.sent if s[0] == topics.SPANS]
    assert forwarded[3] == 3
    assert orjson.loads(forwarded[2])["trace_id"] == stray  # re-sent as its own SpanBatch
    (closed,) = [s for s in ctx.sent if s[0] == topics.TRACES]
    assert [t.trace_id for t in decode(closed[2], TraceBatch).traces] == good


async def test_closes_over_the_message_limit_are_split_into_several_trace_batches() -> None:
    ctx = FakeContext(max_message_bytes=4096)
    assembler = Assembler(ctx, {})
    ids = ids_on(0, 12)
    for t in ids:
        await assembler.handle(event(trace_batch(t), partition=0))
    await assembler.handle(event(TICK, partition=0, key=TICK_KEY))

    sent = [s for s in ctx.sent if s[0] == topics.TRACES]
    assert len(sent) > 1 and all(len(value) <= 4096 for _, _, value, _ in sent)
    assert [t.trace_id for s in sent for t in decode(s[2], TraceBatch, max_bytes=4096).traces] == ids


async def test_a_trace_over_the_limit_once_assembled_is_dead_lettered_by_name_and_the_rest_are_sent() -> None:
    ctx = FakeContext(max_message_bytes=8192)
    assembler = Assembler(ctx, {})
    big, small = ids_on(1, 2)
    root = span(big, f"{big}-r", None, "handle")
    for part in range(4):  # each message under the limit, the trace over it
        kids = [span(big, f"{big}-{part}-{j}", root["span_id"], "tool", outputs="x" * 400) for j in range(5)]
        await assembler.handle(event(batch(big, [root, *kids], final=part == 3), partition=1, offset=part))
    await assembler.handle(event(trace_batch(small), partition=1, offset=9))
    await assembler.handle(event(TICK, partition=1, key=TICK_KEY, offset=10))

    (dead,) = ctx.dead
    assert dead.trace_id == big and dead.error_type == "OversizedError" and dead.offset == 10
    assert "21 spans" in dead.reason and "EVALSTREAM_MAX_MESSAGE_BYTES" in dead.reason
    (sent,) = [s for s in ctx.sent if s[0] == topics.TRACES]
    assert [t.trace_id for t in decode(sent[2], TraceBatch, max_bytes=8192).traces] == [small]
    assert ctx.counters.get("traces_oversized") == 1


async def test_closes_whose_send_fails_are_open_and_due_again_and_go_out_at_the_next_tick() -> None:
    ctx = FakeContext()
    assembler = Assembler(ctx, {})
    ids = ids_on(0, 3)
    for t in ids:
        await assembler.handle(event(trace_batch(t), partition=0))
    real_send = ctx.send

    async def broken(topic: str, key: str | bytes, value: bytes, partition: int | None = None) -> None:
        if topic == topics.TRACES:
            raise ConnectionError("broker gone")
        await real_send(topic, key, value, partition)

    ctx.send = broken  # type: ignore[method-assign]
    await assembler.handle(event(TICK, partition=0, key=TICK_KEY, offset=20))
    (dead,) = ctx.dead
    assert dead.offset == 20 and "broker gone" in dead.reason  # the failed tick is seen
    assert all(assembler.table[t]["open"] for t in ids)

    ctx.send = real_send  # type: ignore[method-assign]
    await assembler.handle(event(TICK, partition=0, key=TICK_KEY, offset=21))
    (sent,) = [s for s in ctx.sent if s[0] == topics.TRACES]
    assert [t.trace_id for t in decode(sent[2], TraceBatch).traces] == ids
    assert all(not assembler.table[t]["open"] for t in ids)


class HungStorage:
    """A store that never answers (a sink stopped mid-query)."""

    async def latest(self, trace_ids: list[str]) -> dict[str, Any]:
        import asyncio

        await asyncio.sleep(3600)
        return {}


async def test_a_rootless_trace_is_not_held_by_storage_that_never_answers(monkeypatch: Any) -> None:
    from pipeline.worker import assembler as module

    monkeypatch.setattr(module, "HISTORY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(module, "HISTORY_RETRY_S", 0.0)
    ctx = FakeContext()
    ctx.assembly = AssemblyConfig(quiet_period_s=0.0, idle_timeout_s=0.0)
    assembler = Assembler(ctx, {}, history=HungStorage())
    (trace_id,) = ids_on(0, 1)
    orphan = span(trace_id, f"{trace_id}-late", "gone", "retry")  # its root was in a version whose state is gone
    await assembler.handle(event(batch(trace_id, [orphan]), partition=0))
    for _ in range(module.HISTORY_TRIES):  # each tick asks, waits at most the timeout, and tries again later
        await assembler.handle(event(TICK, partition=0, key=TICK_KEY))
    traces = [t for s in ctx.sent if s[0] == topics.TRACES for t in decode(s[2], TraceBatch).traces]
    assert [(t.trace_id, t.version, t.status) for t in traces] == [(trace_id, 1, "incomplete")]
    assert ctx.counters.get("assembly_history_errors") == module.HISTORY_TRIES and ctx.dead == []
