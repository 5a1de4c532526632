"""pipeline/sdk/exporter: per-trace batches bundled per partition, and what happens when the broker is
unreachable."""

from __future__ import annotations

import asyncio
import os
import threading

import orjson
import pytest

from pipeline.contracts import SpanBatch
from pipeline.contracts.batches import encode_span_batches
from pipeline.embedded import free_port
from pipeline.sdk import KafkaSpanExporter, Tracer


def _span(i: int, size: int = 10) -> bytes:
    return orjson.dumps({"trace_id": "t1", "span_id": f"s{i}", "name": "x" * size, "start_ns": 1, "end_ns": 2})


def test_a_big_trace_is_split_under_the_message_limit_and_only_the_last_part_is_final() -> None:
    spans = [_span(i, size=900) for i in range(50)]
    payloads = encode_span_batches("t1", spans, final=True, max_bytes=10_000)
    assert len(payloads) > 4
    assert sum(count for _, count in payloads) == 50
    batches = [SpanBatch.model_validate_json(p) for p, _ in payloads]
    assert all(len(p) <= 10_000 for p, _ in payloads)
    assert [b.final for b in batches] == [False] * (len(batches) - 1) + [True]
    assert [s.span_id for b in batches for s in b.spans] == [f"s{i}" for i in range(50)]


def test_a_small_trace_is_one_message() -> None:
    ((payload, count),) = encode_span_batches("t1", [_span(1), _span(2)], final=False, max_bytes=8 * 1024 * 1024)
    batch = SpanBatch.model_validate_json(payload)
    assert count == 2 and not batch.final and batch.trace_id == "t1"


def test_with_the_broker_unreachable_calls_return_normally_memory_is_bounded_and_loss_is_counted() -> None:
    exporter = KafkaSpanExporter(f"127.0.0.1:{free_port()}", max_queue_size=500, flush_interval_s=0.01)
    tracer = Tracer("p", exporter=exporter, enabled=True)

    @tracer.observe(span_type="tool")
    def work(i: int) -> int:
        return i * 2

    results = [work(i) for i in range(5_000)]
    assert results == [i * 2 for i in range(5_000)]
    stats = tracer.stats()
    assert stats["queued"] <= 500  # the bound: spans beyond it are not kept
    assert stats["dropped"] >= 4_500 and stats["sent"] == 0
    assert tracer.flush(timeout_s=0.5) is False  # nothing could be published, and flush says so
    tracer.shutdown(timeout_s=2)
    after = tracer.stats()
    assert after["dropped"] + after["failed"] == 5_000 == tracer.dropped  # every lost span is counted
    assert after["queued"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_with_an_empty_queue_and_no_thread() -> None:
    exporter = KafkaSpanExporter(f"127.0.0.1:{free_port()}", max_queue_size=100)
    tracer = Tracer("p", exporter=exporter, enabled=True)
    with tracer.span("before-fork"):
        pass
    assert exporter._thread is not None
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the exporter's state, then leave without running atexit hooks
        state = f"{exporter._thread is None},{len(exporter._queue)},{isinstance(exporter._lock, type(threading.Lock()))}"
        os.write(write_fd, state.encode())
        os._exit(0)
    os.close(write_fd)
    state = os.read(read_fd, 100).decode()
    os.waitpid(pid, 0)
    assert state == "True,0,True"
    exporter.shutdown(timeout_s=2)


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object:
        self.records.append((key, value))
        return object()


class _Producer:
    """The part of aiokafka's producer the exporter uses, recording what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, _Batch]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, partition: int) -> object:
        self.sent.append((partition, batch))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_a_flush_sends_one_span_bundle_per_partition_and_a_lone_trace_as_its_span_batch() -> None:
    from pipeline.contracts import SpanBundle
    from pipeline.topics import partition_for

    exporter = KafkaSpanExporter("127.0.0.1:1")
    producer = _Producer()
    ids = [f"trace-{i}" for i in range(40)]
    by_trace = {t: ([orjson.dumps({"trace_id": t, "span_id": "r", "name": "x", "start_ns": 1, "end_ns": 2})],
                    [True]) for t in ids}
    await exporter._publish(producer, by_trace)

    assert exporter.sent == 40 and exporter.failed == 0
    seen: list[str] = []
    for partition, sent in producer.sent:
        ((key, value),) = sent.records  # the partition's traces in one message
        bundle = SpanBundle.model_validate_json(value)
        assert key == bundle.batches[0].trace_id.encode()
        assert {partition_for(b.trace_id, 4) for b in bundle.batches} == {partition}
        assert all(b.final for b in bundle.batches)
        seen += [b.trace_id for b in bundle.batches]
    assert sorted(seen) == sorted(ids)

    single = _Producer()
    await exporter._publish(single, {"trace-0": by_trace["trace-0"]})
    ((_, sent),) = single.sent
    ((_, value),) = sent.records
    assert SpanBatch.model_validate_json(value).trace_id == "trace-0"  # a lone trace stays a plain SpanBatch
