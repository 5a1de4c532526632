"""SDK cost on the caller's thread, against the OpenTelemetry SDK, and publish throughput.

    .venv/bin/python bench/sdk_overhead.py [--calls 200000] [--publish-spans 300000]

All in one run, on the same machine and the same workload: a decorated two-argument function
whose inputs and output are captured.
- bare: the undecorated function (the floor of calling it at all).
- floor: what the issue calls the floor of the approach: build a dict, orjson it, append to a deque.
- evalstream: `@tracer.observe` with the real Kafka exporter publishing to an embedded broker.
- evalstream, broker unreachable: the same, pointed at a closed port (the queue fills, then drops).
- opentelemetry: `start_as_current_span` + input/output attributes, BatchSpanProcessor, and an
  exporter that drops everything (so only the SDK's own cost is measured).
Per-span cost = median over batches of 100 calls. Then publish throughput: spans/s from the first
span recorded until the broker acknowledged the last one (traces of 10 spans).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.admin import ensure_topics
from pipeline.embedded import EmbeddedBroker, free_port
from pipeline.sdk import Tracer

BATCH = 100


def per_call_ns(fn: Callable[[int], object], calls: int) -> float:
    samples = []
    for start in range(0, calls, BATCH):
        t0 = time.perf_counter_ns()
        for i in range(start, start + BATCH):
            fn(i)
        samples.append((time.perf_counter_ns() - t0) / BATCH)
    return statistics.median(samples)


def bare_fn() -> Callable[[int], object]:
    def tool(x: int, y: int = 2) -> int:
        return x + y

    return tool


def floor_fn() -> Callable[[int], object]:
    queue: deque[bytes] = deque(maxlen=100_000)

    def tool(x: int, y: int = 2) -> int:
        start = time.time_ns()
        out = x + y
        queue.append(orjson.dumps({"name": "tool", "start_ns": start, "end_ns": time.time_ns(),
                                   "inputs": {"x": x, "y": y}, "outputs": out}))
        return out

    return tool


def evalstream_fn(tracer: Tracer) -> Callable[[int], object]:
    @tracer.observe(span_type="tool")
    def tool(x: int, y: int = 2) -> int:
        return x + y

    return tool


def otel_fn() -> tuple[Callable[[int], object], Callable[[], None]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DroppingExporter(SpanExporter):
        def export(self, spans: Sequence[object]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
    otel = provider.get_tracer("bench")

    def tool(x: int, y: int = 2) -> int:
        with otel.start_as_current_span("tool") as span:
            span.set_attribute("input.value", orjson.dumps({"x": x, "y": y}).decode())
            out = x + y
            span.set_attribute("output.value", out)
            return out

    return tool, provider.shutdown


def publish_throughput(bootstrap: str, spans: int) -> tuple[float, dict[str, int]]:
    tracer = Tracer("bench", bootstrap_servers=bootstrap, max_queue_size=spans + 1, flush_interval_s=0.02)
    with tracer.span("warm-up"):
        pass
    assert tracer.flush(30), "could not reach the broker"

    @tracer.observe(span_type="tool")
    def tool(q: str) -> str:
        return q

    @tracer.observe()
    def request(i: int) -> None:
        for j in range(9):
            tool(f"query {i}-{j}")

    t0 = time.perf_counter()
    for i in range(spans // 10):
        request(i)
    ok = tracer.flush(120)
    elapsed = time.perf_counter() - t0
    stats = tracer.stats()
    tracer.shutdown()
    assert ok and stats["sent"] == spans // 10 * 10 + 1, stats
    return (spans // 10 * 10) / elapsed, stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--publish-spans", type=int, default=300_000)
    args = parser.parse_args()

    broker = EmbeddedBroker()
    bootstrap = broker.start()
    try:
        asyncio.run(ensure_topics(bootstrap, partitions=8))
        results: dict[str, float] = {}
        for name, fn in {"bare": bare_fn(), "floor (dict+orjson+deque)": floor_fn()}.items():
            per_call_ns(fn, 5_000)
            results[name] = per_call_ns(fn, args.calls)
        # Each SDK runs alone, with its own background thread busy, so neither slows the other.
        tracer = Tracer("bench", bootstrap_servers=bootstrap, max_queue_size=100_000)
        ours = evalstream_fn(tracer)
        per_call_ns(ours, 5_000)
        results["evalstream"] = per_call_ns(ours, args.calls)
        tracer.flush(60)
        stats = tracer.stats()
        tracer.shutdown()
        unreachable = Tracer("bench", bootstrap_servers=f"127.0.0.1:{free_port()}", max_queue_size=100_000)
        down = evalstream_fn(unreachable)
        per_call_ns(down, 5_000)
        results["evalstream, broker unreachable"] = per_call_ns(down, args.calls)
        down_stats = unreachable.stats()
        unreachable.shutdown(timeout_s=1)
        otel, otel_shutdown = otel_fn()
        per_call_ns(otel, 5_000)
        results["opentelemetry"] = per_call_ns(otel, args.calls)
        otel_shutdown()

        print(f"caller-thread cost per span, median of batches of {BATCH} ({args.calls} calls each):")
        for name, ns in results.items():
            print(f"  {name:28s} {ns / 1000:6.2f} us")
        ours, theirs, bare = results["evalstream"], results["opentelemetry"], results["bare"]
        print(f"  evalstream / opentelemetry  {ours / theirs:6.3f}x   (target <= 0.15x)")
        print(f"  evalstream net of the bare call {(ours - bare) / 1000:.2f} us (target <= 3 us)")
        print(f"  evalstream exporter during the run: {stats}")
        print(f"  broker unreachable / reachable {results['evalstream, broker unreachable'] / ours:6.3f}x; "
              f"queue stayed bounded: {down_stats}")

        rate, pub_stats = publish_throughput(bootstrap, args.publish_spans)
        print(f"publish throughput: {rate:,.0f} spans/s from one process (target >= 50,000); {pub_stats}")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
