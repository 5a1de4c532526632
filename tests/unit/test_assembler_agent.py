"""pipeline/worker/assembler.py with a fake context and a dict for its table: SpanBundles of many traces,
a bad batch inside one, whole traces closed (and routed) in the event that brings them, and closes sent as
TraceBatches of one partition. No broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from pipeline import topics
from pipeline.assembly import AssemblyConfig
from pipeline.contracts import DeadLetter, TraceBatch, decode, pack_items
from pipeline.metrics import Counters
from pipeline.rules import parse_rules
from pipeline.rules.versions import ActiveRules
from pipeline.worker.assembler import TICK, TICK_KEY, Assembler
from scorers.testing import resolver
from tests.integration.harness import batch, span

PARTITIONS = 4


class FakeContext:
    def __init__(self, max_message_bytes: int = 1024 * 1024) -> None:
        self.settings = SimpleNamespace(max_message_bytes=max_message_bytes, topic_partitions=PARTITIONS)
        self.assembly = AssemblyConfig(quiet_period_s=0.0)
        self.ruleset = parse_rules({"rules": [{"name": "errors", "scorer": "error_spans"}]})
        self.rules = ActiveRules.of(self.ruleset)
        self.scorers = resolver()
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


def trace_batch(trace_id: str, final: bool = True) -> bytes:
    root = span(trace_id, f"{trace_id}-r", None, "handle")
    return batch(trace_id, [root, span(trace_id, f"{trace_id}-c", root["span_id"], "tool")], final=final)


class RecordingTable(dict):
    """The table's writes, as the changelog would get them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, bool]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes.append((key, bool(value["open"])))
        super().__setitem__(key, value)


def bundle(parts: list[bytes]) -> bytes:
    ((value, _),) = pack_items("batches", parts, kind="span_bundle")
    return value


async def test_a_bundle_of_whole_traces_closes_in_its_own_event_as_one_trace_batch_with_decisions() -> None:
    ctx = FakeContext()
    table = RecordingTable()
    assembler = Assembler(ctx, table)
    ids = ids_on(2, 5)
    await assembler.handle(event(bundle([trace_batch(t) for t in ids]), partition=2))

    (sent,) = [s for s in ctx.sent if s[0] == topics.TRACES]  # no tick needed
    closed = decode(sent[2], TraceBatch)
    assert [t.trace_id for t in closed.traces] == ids and all(len(t.spans) == 2 for t in closed.traces)
    assert sorted(d.trace_id for d in closed.decisions) == sorted(ids)  # routed in the same event
    assert sent[3] == 2 and sent[1] == ids[0].encode()  # on the spans' partition, keyed by its first trace
    (jobs,) = [s for s in ctx.sent if s[0] == topics.JOBS]
    assert jobs[3] == 2
    assert table.writes == [(t, False) for t in ids]  # each written once, closed: never its open state
    assert ctx.dead == [] and ctx.counters.get("spans_in") == 10

    await assembler.handle(event(TICK, partition=2, key=TICK_KEY))
    assert len([s for s in ctx.sent if s[0] == topics.TRACES]) == 1  # nothing left for the tick


async def test_a_trace_without_final_waits_for_the_tick() -> None:
    ctx = FakeContext()
    table = RecordingTable()
    assembler = Assembler(ctx, table)
    (trace_id,) = ids_on(0, 1)
    await assembler.handle(event(trace_batch(trace_id, final=False), partition=0))
    assert [s for s in ctx.sent if s[0] == topics.TRACES] == [] and table.writes == [(trace_id, True)]
    await assembler.handle(event(TICK, partition=0, key=TICK_KEY))
    (sent,) = [s for s in ctx.sent if s[0] == topics.TRACES]
    assert [t.trace_id for t in decode(sent[2], TraceBatch).traces] == [trace_id]


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
        await assembler.handle(event(trace_batch(t, final=False), partition=0))
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
    assert dead.trace_id == big and dead.error_type == "OversizedError" and dead.offset == 3  # where it closed
    assert "21 spans" in dead.reason and "EVALSTREAM_MAX_MESSAGE_BYTES" in dead.reason
    (sent,) = [s for s in ctx.sent if s[0] == topics.TRACES]
    assert [t.trace_id for t in decode(sent[2], TraceBatch, max_bytes=8192).traces] == [small]
    assert ctx.counters.get("traces_oversized") == 1


async def test_closes_whose_send_fails_are_open_and_due_again_and_go_out_at_the_next_tick() -> None:
    ctx = FakeContext()
    assembler = Assembler(ctx, {})
    ids = ids_on(0, 3)
    for t in ids:
        await assembler.handle(event(trace_batch(t, final=False), partition=0))
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


async def test_a_whole_trace_whose_close_cannot_be_sent_is_written_open_and_closes_at_the_next_tick() -> None:
    ctx = FakeContext()
    table = RecordingTable()
    assembler = Assembler(ctx, table)
    (trace_id,) = ids_on(0, 1)
    real_send = ctx.send

    async def broken(topic: str, key: str | bytes, value: bytes, partition: int | None = None) -> None:
        if topic == topics.TRACES:
            raise ConnectionError("broker gone")
        await real_send(topic, key, value, partition)

    ctx.send = broken  # type: ignore[method-assign]
    await assembler.handle(event(trace_batch(trace_id), partition=0, offset=30))
    (dead,) = ctx.dead
    assert dead.offset == 30 and "broker gone" in dead.reason
    assert table.writes == [(trace_id, True)] and table[trace_id]["version"] == 1  # kept open, not lost

    ctx.send = real_send  # type: ignore[method-assign]
    await assembler.handle(event(TICK, partition=0, key=TICK_KEY, offset=31))
    (sent,) = [s for s in ctx.sent if s[0] == topics.TRACES]
    assert [(t.trace_id, t.version) for t in decode(sent[2], TraceBatch).traces] == [(trace_id, 1)]


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


class SinkHistory:
    """Storage as the sink fills it from the sent TraceBatches, optionally lagging by `behind` lookups."""

    def __init__(self, ctx: FakeContext, behind: int = 0, up: bool = True) -> None:
        self.ctx = ctx
        self.behind = behind
        self.asked = 0
        self.up = up

    async def readable(self) -> bool:
        if not self.up:
            from pipeline.errors import StorageError

            raise StorageError("no query endpoint")
        return True

    async def latest(self, trace_ids: list[str]) -> dict[str, Any]:
        self.asked += 1
        if self.asked <= self.behind:
            return {}
        stored: dict[str, Any] = {}
        for s in self.ctx.sent:
            if s[0] == topics.TRACES:
                for t in orjson.loads(s[2])["traces"]:
                    if t["trace_id"] in trace_ids and t["version"] > stored.get(t["trace_id"], {}).get("version", 0):
                        stored[t["trace_id"]] = t
        return stored


async def test_a_closed_trace_keeps_only_its_span_ids_and_a_late_span_reads_the_rest_back_from_storage(
        monkeypatch: Any) -> None:
    from pipeline.worker import assembler as module

    monkeypatch.setattr(module, "STORED_SPANS_RETRY_S", 0.0)
    ctx = FakeContext()
    history = SinkHistory(ctx, behind=2)  # the sink has not stored version 1 for the first two lookups
    table = RecordingTable()
    assembler = Assembler(ctx, table, history=history)
    await assembler.probe_storage()
    (trace_id,) = ids_on(0, 1)
    await assembler.handle(event(trace_batch(trace_id), partition=0))
    state = table[trace_id]
    assert state["spans"] == {} and sorted(state["span_ids"]) == [f"{trace_id}-c", f"{trace_id}-r"]
    assert len(orjson.dumps(state)) < 400  # what the changelog keeps of a closed trace

    late = span(trace_id, f"{trace_id}-late", f"{trace_id}-r", "callback")
    await assembler.handle(event(batch(trace_id, [late], final=True), partition=0, offset=6))
    for offset in range(3):
        await assembler.handle(event(TICK, partition=0, key=TICK_KEY, offset=7 + offset))
    versions = [t for s in ctx.sent if s[0] == topics.TRACES for t in decode(s[2], TraceBatch).traces]
    assert [(t.version, sorted(sp.span_id for sp in t.spans)) for t in versions] == [
        (1, [f"{trace_id}-c", f"{trace_id}-r"]),
        (2, [f"{trace_id}-c", f"{trace_id}-late", f"{trace_id}-r"]),  # whole, once storage had version 1
    ]
    assert versions[1].root_span_id == f"{trace_id}-r" and versions[1].reopened_by is not None
    assert history.asked == 3 and ctx.dead == []


async def test_spans_sent_again_after_a_compact_close_are_duplicates_not_a_new_version() -> None:
    ctx = FakeContext()
    assembler = Assembler(ctx, RecordingTable(), history=SinkHistory(ctx))
    await assembler.probe_storage()
    (trace_id,) = ids_on(0, 1)
    await assembler.handle(event(trace_batch(trace_id), partition=0))
    await assembler.handle(event(trace_batch(trace_id), partition=0, offset=6))  # redelivered
    await assembler.handle(event(TICK, partition=0, key=TICK_KEY))
    assert len([s for s in ctx.sent if s[0] == topics.TRACES]) == 1
    assert ctx.counters.get("spans_duplicate") == 2 and ctx.counters.get("traces_reopened") == 0


async def test_closed_traces_are_kept_whole_while_storage_cannot_be_read_back() -> None:
    ctx = FakeContext()
    table = RecordingTable()
    assembler = Assembler(ctx, table, history=SinkHistory(ctx, up=False))
    await assembler.probe_storage()
    (trace_id,) = ids_on(0, 1)
    await assembler.handle(event(trace_batch(trace_id), partition=0))
    assert len(table[trace_id]["spans"]) == 2  # a late span's version can be whole without storage
    late = span(trace_id, f"{trace_id}-late", f"{trace_id}-r", "callback")
    await assembler.handle(event(batch(trace_id, [late], final=True), partition=0, offset=6))
    await assembler.handle(event(TICK, partition=0, key=TICK_KEY, offset=7))
    versions = [t for s in ctx.sent if s[0] == topics.TRACES for t in decode(s[2], TraceBatch).traces]
    assert [(t.version, len(t.spans)) for t in versions] == [(1, 2), (2, 3)]


async def test_ticks_go_only_to_partitions_with_something_due() -> None:
    from types import SimpleNamespace as NS

    ctx = FakeContext()
    ctx.settings.tick_interval_s = 0.5
    ctx.app = NS(assignor=NS(assigned_actives=lambda: [NS(topic=topics.SPANS, partition=p) for p in range(3)]))
    assembler = Assembler(ctx, {})
    (waiting,) = ids_on(1, 1)
    (whole,) = ids_on(2, 1)
    await assembler.handle(event(trace_batch(waiting, final=False), partition=1))  # due after the quiet period
    await assembler.handle(event(trace_batch(whole), partition=2))  # closed at once: due only to be forgotten
    ctx.sent.clear()
    await assembler.send_ticks()
    # partition 0 was never indexed: it gets one, which builds its index; 2 has nothing due for 15 minutes
    assert sorted(p for t, k, _, p in ctx.sent if t == topics.SPANS and k == TICK_KEY) == [0, 1]



async def test_whole_traces_are_routed_with_the_spans_validated_at_the_edge() -> None:
    """A trace closed in the event that brought it is routed with the Span objects its batch validated into,
    not validated again; the routed trace equals validating the bytes the assembler wrote."""
    from pipeline.contracts import Trace
    from pipeline.worker.close_router import CloseRouter

    ctx = FakeContext()
    assembler = Assembler(ctx, RecordingTable())
    seen: list[Any] = []
    route = CloseRouter._route

    async def spy(self: CloseRouter, source: Any, closed: Any, rules: Any) -> Any:
        routed = await route(self, source, closed, rules)
        seen.append((closed, routed.trace))
        return routed

    ids = ids_on(2, 3)
    CloseRouter._route = spy  # type: ignore[method-assign]
    try:
        await assembler.handle(event(bundle([trace_batch(t) for t in ids]), partition=2))
    finally:
        CloseRouter._route = route  # type: ignore[method-assign]
    assert len(seen) == 3 and assembler._validated == {}
    for closed, trace in seen:
        assert closed.spans is not None and len(closed.spans) == 2
        assert trace.spans[0] is closed.spans[0]  # taken as they are
        assert trace == Trace.model_validate_json(closed.raw)

    # spans that arrived in an earlier event are validated with the trace when it closes
    late = ids_on(2, 4)[3]
    seen.clear()
    first, second = orjson.loads(trace_batch(late)), orjson.loads(trace_batch(late))
    first["spans"], second["spans"], first["final"] = first["spans"][:1], second["spans"][1:], False
    await assembler.handle(event(orjson.dumps(first), partition=2))
    CloseRouter._route = spy  # type: ignore[method-assign]
    try:
        await assembler.handle(event(orjson.dumps(second), partition=2))
        await assembler.handle(event(TICK, partition=2, key=TICK_KEY))
    finally:
        CloseRouter._route = route  # type: ignore[method-assign]
    ((closed, trace),) = seen
    assert closed.spans is None and trace == Trace.model_validate_json(closed.raw)


async def test_a_span_enrichment_changed_is_validated_as_enriched() -> None:
    """Enrichment replaces a span dict it changes (an inherited agent): that trace is validated from its payload,
    so routing sees the enriched span, not the object validated at the edge."""
    from pipeline.worker.close_router import CloseRouter

    ctx = FakeContext()
    assembler = Assembler(ctx, RecordingTable())
    seen: list[Any] = []
    route = CloseRouter._route

    async def spy(self: CloseRouter, source: Any, closed: Any, rules: Any) -> Any:
        routed = await route(self, source, closed, rules)
        seen.append((closed, routed.trace))
        return routed

    (trace_id,) = ids_on(0, 1)
    root = span(trace_id, f"{trace_id}-r", None, "agent", agent_name="planner")
    CloseRouter._route = spy  # type: ignore[method-assign]
    try:
        await assembler.handle(event(batch(trace_id, [root, span(trace_id, f"{trace_id}-c", root["span_id"])],
                                           final=True), partition=0))
    finally:
        CloseRouter._route = route  # type: ignore[method-assign]
    ((closed, trace),) = seen
    assert closed.spans is None and [s.agent_name for s in trace.spans] == ["planner", "planner"]
