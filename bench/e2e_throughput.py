"""End-to-end throughput: traces/s and spans/s through the whole path, against the raw broker.

    .venv/bin/python bench/e2e_throughput.py [--traces 3000] [--spans 10] [--profile out.txt] [--latency-traces 2000]

--profile samples the worker with py-spy (`pip install py-spy`) while the traces go through, and
writes the top functions by own time and by total time.

Baseline (same run, same broker): aiokafka producing and consuming messages of the same size as
one trace's SpanBatch. Pipeline: one worker process (assembler, router, scorer, alerter, sink)
scoring every trace with two code scorers; the clock stops when the last score row is in chDB.
Then a latency phase sends traces at a steady rate (half the throughput measured) and reads, per score
row, the time from its trace's close to the row's insert. EVALSTREAM_* variables reach the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.admin import ensure_topics
from pipeline.contracts import pack_items
from pipeline.embedded import EmbeddedBroker
from pipeline.topics import partition_for
from tests.integration.harness import WorkerProcess, batch, span
from tests.integration.ledger import Ledger, LedgerRule

EXTRA_ENV = {k: v for k, v in os.environ.items() if k.startswith("EVALSTREAM_")}  # settings to try, passed on

RULES = """
rules:
  - name: errors
    scorer: error_spans
  - name: latency
    scorer: trace_latency
    params: {max_ms: 1000}
"""


def trace_batches(n: int, spans: int, prefix: str = "b") -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        trace_id = f"{prefix}{i:07d}"
        root = span(trace_id, f"{trace_id}-r", None, "root", dur_ms=20)
        kids = [span(trace_id, f"{trace_id}-{j}", root["span_id"], f"tool{j % 3}", start_ms=j, span_type="tool",
                     inputs={"q": f"query {j}"}, outputs={"ok": True}) for j in range(spans - 1)]
        out.append((trace_id.encode(), batch(trace_id, [root, *kids], final=True)))
    return out


def bundled(messages: list[tuple[bytes, bytes]], per_message: int, partitions: int = 8) -> list[tuple[bytes, bytes]]:
    """As the SDK sends a flush: per partition, the SpanBatches of up to `per_message` traces in one SpanBundle,
    keyed by its first trace (so it lands on their partition)."""
    if per_message <= 1:
        return messages
    chunks: dict[int, list[tuple[bytes, bytes]]] = {}
    out: list[tuple[int, bytes, bytes]] = []
    for index, (key, value) in enumerate(messages):
        chunk = chunks.setdefault(partition_for(key.decode(), partitions), [])
        chunk.append((key, value))
        if len(chunk) == per_message:
            out.append((index, *_bundle(chunk)))
            chunk.clear()
    out += [(len(messages), *_bundle(chunk)) for chunk in chunks.values() if chunk]
    return [(key, value) for _, key, value in sorted(out, key=lambda item: item[0])]


def _bundle(chunk: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    ((value, _),) = pack_items("batches", [v for _, v in chunk], 64 * 1024 * 1024, kind="span_bundle")
    return chunk[0][0], value


async def raw_broker(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    topic = "bench.raw"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=16 * 1024 * 1024)
    await producer.start()
    started = time.perf_counter()
    for key, value in messages:
        await producer.send(topic, value, key=key)
    await producer.flush()
    produce_s = time.perf_counter() - started
    await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=10, max_partition_fetch_bytes=16 * 1024 * 1024)
    await consumer.start()
    started, seen = time.perf_counter(), 0
    while seen < len(messages):
        for records in (await consumer.getmany(timeout_ms=1000)).values():
            seen += len(records)
    consume_s = time.perf_counter() - started
    await consumer.stop()
    return len(messages) / produce_s, len(messages) / consume_s


async def produce(bootstrap: str, messages: list[tuple[bytes, bytes]], rate: float | None = None) -> float:
    """Send as fast as the producer goes, or at `rate` traces/s in 10 ms steps."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=16 * 1024 * 1024)
    await producer.start()
    started = time.perf_counter()
    for i, (key, value) in enumerate(messages):
        if rate is not None and (ahead := i / rate - (time.perf_counter() - started)) > 0.01:
            await asyncio.sleep(ahead)
        await producer.send("evalstream.spans.v1", value, key=key)
    await producer.flush()
    await producer.stop()
    return started


def start_profile(worker: WorkerProcess, out: Path, tmp: Path) -> subprocess.Popen:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    assert worker.process is not None
    return subprocess.Popen([spy, "record", "--pid", str(worker.process.pid), "--rate", "200", "--format", "raw",
                             "--output", str(tmp / "profile.raw"), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish_profile(spy: subprocess.Popen, out: Path, tmp: Path, top: int = 40) -> None:
    """Stop py-spy and summarise its folded stacks: own time (the leaf frame) and total time per function."""
    spy.send_signal(2)
    spy.wait(timeout=60)
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in (tmp / "profile.raw").read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        samples += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
    lines = [f"{samples} samples", "", "own time:"]
    lines += [f"{100 * n / samples:5.1f}%  {f}" for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    lines += ["", "total time:"]
    lines += [f"{100 * n / samples:5.1f}%  {f}" for f, n in sorted(total.items(), key=lambda kv: -kv[1])[:top]]
    out.write_text("\n".join(lines) + "\n")
    shutil.copy(tmp / "profile.raw", out.with_suffix(".folded"))  # for flame graphs and closer reading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=3000)
    parser.add_argument("--spans", type=int, default=10)
    parser.add_argument("--traces-per-message", type=int, default=25,
                        help="traces per spans message, packed per partition as the SDK packs a flush (1: one "
                             "SpanBatch per trace, as OpenTelemetry exporters send)")
    parser.add_argument("--split-sink", action="store_true",
                        help="run the sink in a process of its own (as the deploy does), beside the Faust roles")
    parser.add_argument("--profile", type=Path, default=None, help="write a py-spy profile of the worker here")
    parser.add_argument("--latency-traces", type=int, default=2000,
                        help="then send this many traces at a steady rate and measure close -> score row")
    parser.add_argument("--latency-rate", type=float, default=None,
                        help="traces/s of the latency phase (default: half the measured throughput)")
    args = parser.parse_args()
    per_trace = trace_batches(args.traces, args.spans)
    messages = bundled(per_trace, args.traces_per_message)
    size = sum(len(v) for _, v in messages) / len(messages)

    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_file=Path(tmp) / "broker.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, partitions=8))
        produce_rate, consume_rate = asyncio.run(raw_broker(broker.bootstrap, messages))
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(RULES)
        env = {"EVALSTREAM_TOPIC_PARTITIONS": "8", "EVALSTREAM_LOG_LEVEL": "warn", **EXTRA_ENV}
        front = None
        if args.split_sink:  # the Faust roles in one process, the sink (chDB) in another: one per core
            front = WorkerProcess(Path(tmp) / "front", broker.bootstrap, rules,
                                  {**env, "EVALSTREAM_SINK_ENABLED": "false"}).start()
            env["EVALSTREAM_ROLES"] = ""
        worker = WorkerProcess(Path(tmp) / "data", broker.bootstrap, rules, env).start()
        try:
            time.sleep(12)  # let both consumer groups join (Tansu: half the session timeout each)
            spy = start_profile(front or worker, args.profile, Path(tmp)) if args.profile else None
            started = asyncio.run(produce(broker.bootstrap, messages))
            target = 2 * args.traces
            worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.scores") >= target,
                            timeout_s=1800, what="all scores stored")
            elapsed = time.perf_counter() - started
            if spy is not None:
                finish_profile(spy, args.profile, Path(tmp))
            ledger = Ledger([LedgerRule("errors"), LedgerRule("latency")],
                            spans={key.decode(): args.spans for key, _ in per_trace}, messages=per_trace)
            try:  # decisions and the last inserts may trail the scores by a flush
                worker.wait_for(lambda: not ledger.account(worker.query), timeout_s=30, what="the ledger to balance")
            except AssertionError:
                pass
            problems = ledger.account(worker.query)
            latency_rate = args.latency_rate or max(1.0, args.traces / elapsed / 2)
            latency = measure_latency(worker, broker.bootstrap, args.latency_traces, args.spans, latency_rate)
        finally:
            worker.stop()
            if front is not None:
                front.stop()

    traces_s = args.traces / elapsed
    per_message = args.traces / len(messages)
    print(f"traces: {args.traces} of {args.spans} spans in {len(messages)} messages ({per_message:.1f} traces, "
          f"{size:.0f} B per message)")
    print(f"raw broker   produce: {produce_rate:10.0f} msg/s  ({produce_rate * per_message:10.0f} traces/s, "
          f"{produce_rate * per_message * args.spans:10.0f} spans/s)")
    print(f"raw broker   consume: {consume_rate:10.0f} msg/s  ({consume_rate * per_message:10.0f} traces/s, "
          f"{consume_rate * per_message * args.spans:10.0f} spans/s)")
    print(f"pipeline end to end : {traces_s:10.1f} traces/s ({traces_s * args.spans:10.0f} spans/s), "
          f"{elapsed:.1f} s for all scores stored")
    print(f"ratio pipeline / raw produce: {traces_s / (produce_rate * per_message):.3f}; target 2000 traces/s: "
          f"{traces_s / 2000:.2f}x")
    print(f"ledger: {args.traces * args.spans} spans, {args.traces} traces, {2 * args.traces} scores accounted for: "
          + ("all" if not problems else "; ".join(problems)))
    if latency:
        p50, p95, p99, worst = latency
        print(f"latency at {latency_rate:.0f} traces/s, trace closed -> score row stored: p50 {p50:.0f} ms, "
              f"p95 {p95:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms (target p95 <= 1000 ms)")


def measure_latency(worker: WorkerProcess, bootstrap: str, n: int, spans: int, rate: float
                    ) -> tuple[float, float, float, float] | None:
    """Send n traces at a steady rate, wait for their scores, and read each score row's insert time against
    its trace's close time from the tables (`scores.ingested_at` - `traces.closed_at`)."""
    if n <= 0:
        return None
    before = worker.scalar("SELECT count() FROM evalstream.scores")
    asyncio.run(produce(bootstrap, trace_batches(n, spans, prefix="l"), rate=rate))
    worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.scores") >= before + 2 * n,
                    timeout_s=600, what="the latency phase's scores")
    (row,) = worker.query(
        "SELECT quantiles(0.5, 0.95, 0.99)(ms), max(ms) FROM (SELECT (toUnixTimestamp64Micro(s.ingested_at)"
        " - toUnixTimestamp64Micro(t.closed_at)) / 1000 AS ms FROM evalstream.scores AS s"
        " INNER JOIN evalstream.traces AS t ON s.trace_id = t.trace_id AND s.trace_version = t.version"
        " WHERE startsWith(s.trace_id, 'l'))")
    (p50, p95, p99), worst = row[0], row[1]
    return p50, p95, p99, worst


if __name__ == "__main__":
    main()
