"""Scorer scaling: score jobs/s with 1, 2 and 3 scorer processes sharing the jobs topic's partitions.

    .venv/bin/python bench/scaling.py [--jobs 6000] [--partitions 6] [--max-scorers 3] [--spans 10]

One broker (embedded Tansu) and one sink-only process (roles: none, sink on) stay up for the whole run.
For each K, K scorer-only processes start and join the group (a probe job must come back scored), then
N pre-built jobs go onto `evalstream.jobs.v2` and the clock runs until the last score row is in chDB.
Baseline in the same run: a plain aiokafka consumer reading the same job messages (no scoring).
On a 2-core machine the curve flattens at 2 processes: each scorer process is one Python interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import topics
from pipeline.admin import ensure_topics
from pipeline.contracts import (
    CloseReason,
    ScoreJob,
    ScoreJobBatch,
    ScoreJobBundle,
    Span,
    Trace,
    TraceStatus,
    encode,
)
from pipeline.embedded import EmbeddedBroker
from tests.integration.harness import WorkerProcess

RULES = """
rules:
  - {name: errors, scorer: error_spans}
  - {name: latency, scorer: trace_latency, params: {max_ms: 1000}}
"""


def job_messages(tag: str, n_traces: int, spans: int) -> list[tuple[bytes, bytes]]:
    """Two jobs (one per rule) per trace, as the router would send them."""
    out = []
    now = time.time_ns()
    for i in range(n_traces):
        trace_id = f"{tag}{i:07d}"
        trace_spans = [Span(trace_id=trace_id, span_id=f"{trace_id}-{j}", parent_span_id=None if j == 0 else
                            f"{trace_id}-0", name=f"tool{j % 3}", span_type="tool" if j else "function",
                            start_ns=now + j, end_ns=now + j + 1_000_000) for j in range(spans)]
        trace = Trace(trace_id=trace_id, version=1, status=TraceStatus.COMPLETE, close_reason=CloseReason.FINAL,
                      root_span_id=f"{trace_id}-0", start_ns=now, end_ns=now + 2_000_000, closed_at_ns=now,
                      spans=trace_spans)
        jobs = [ScoreJob(job_id=ScoreJob.make_id(rule, trace_id, 1), rule=rule, scorer=scorer, trace_id=trace_id,
                         trace_version=1, params=params, created_ns=now)
                for rule, scorer, params in (("errors", "error_spans", {}), ("latency", "trace_latency",
                                                                               {"max_ms": 1000}))]
        out.append((trace_id.encode(), encode(ScoreJobBundle(batches=[ScoreJobBatch(trace=trace, jobs=jobs)]))))
    return out


async def produce(bootstrap: str, messages: list[tuple[bytes, bytes]], topic: str = topics.JOBS) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def raw_consume(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> float:
    topic = "bench.scaling.raw"
    await produce(bootstrap, messages, topic)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=10, max_partition_fetch_bytes=16 * 1024 * 1024)
    await consumer.start()
    started, seen = time.perf_counter(), 0
    try:
        while seen < len(messages):
            batches = await consumer.getmany(timeout_ms=500)
            seen += sum(len(b) for b in batches.values())
    finally:
        await consumer.stop()
    return len(messages) / (time.perf_counter() - started)


def scored(sink: WorkerProcess, tag: str) -> int:
    """Jobs scored, each once: a job a rebalance redelivered (at-least-once) is stored under the same job id."""
    return int(sink.scalar(f"SELECT uniqExact(job_id) FROM evalstream.scores WHERE startsWith(trace_id, '{tag}')"))


def run_round(k: int, bootstrap: str, sink: WorkerProcess, rules: Path, root: Path, args: argparse.Namespace) -> float:
    env = {"EVALSTREAM_ROLES": "scorer", "EVALSTREAM_SINK_ENABLED": "false",
           "EVALSTREAM_TOPIC_PARTITIONS": str(args.partitions)}
    scorers = [WorkerProcess(root / f"k{k}-{i}", bootstrap, rules, env).start() for i in range(k)]
    try:
        probe = f"p{k}x"
        asyncio.run(produce(bootstrap, job_messages(probe, 1, 2)))
        sink.wait_for(lambda: scored(sink, probe) == 2, timeout_s=120, what=f"{k} scorer(s) joined")
        time.sleep(6)  # a late joiner's rebalance would otherwise land inside the timed window
        tag = f"s{k}x"
        messages = job_messages(tag, args.jobs // 2, args.spans)
        started = time.perf_counter()
        asyncio.run(produce(bootstrap, messages))
        sink.wait_for(lambda: scored(sink, tag) == 2 * len(messages), timeout_s=600, what=f"round {k} scored")
        return 2 * len(messages) / (time.perf_counter() - started)
    finally:
        for worker in scorers:
            worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=6000)
    # not the embedded stack's 2 (pipeline/embedded.py): K scorer processes need at least K jobs partitions
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--max-scorers", type=int, default=3)
    parser.add_argument("--spans", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="evalstream-scaling-"))
    rules = root / "rules.yaml"
    rules.write_text(RULES)
    broker = EmbeddedBroker(log_file=root / "broker.log")
    bootstrap = broker.start()
    try:
        asyncio.run(ensure_topics(bootstrap, args.partitions))
        raw = asyncio.run(raw_consume(bootstrap, job_messages("raw", args.jobs // 2, args.spans)))
        print(f"raw broker: {raw:,.0f} job messages/s consumed by one aiokafka consumer "
              f"({2 * raw:,.0f} jobs/s at 2 jobs per message)")
        sink = WorkerProcess(root / "sink", bootstrap, rules, {"EVALSTREAM_ROLES": "",
                                                               "EVALSTREAM_TOPIC_PARTITIONS": str(args.partitions)})
        sink.start()
        try:
            rates = {}
            for k in range(1, args.max_scorers + 1):
                rates[k] = run_round(k, bootstrap, sink, rules, root, args)
                print(f"{k} scorer process(es): {rates[k]:,.0f} jobs/s  ({rates[k] / rates[1]:.2f}x of 1)", flush=True)
        finally:
            sink.stop()
    finally:
        broker.stop()
    print(f"\n{args.jobs} jobs per round ({args.jobs // 2} traces of {args.spans} spans, 2 rules), "
          f"{args.partitions} partitions, {__import__('os').cpu_count()} CPUs")


if __name__ == "__main__":
    main()
