"""End-to-end throughput: traces/s and spans/s through the whole path, against the raw broker.

    .venv/bin/python bench/e2e_throughput.py [--traces 3000] [--spans 10] [--split-sink | --split-roles]
        [--profile out.txt] [--latency-traces 2000] [--partitions 2]

--profile samples the worker with py-spy (`pip install py-spy`) while the traces go through, and
writes the top functions by own time and by total time.

Baseline (same run, same broker): aiokafka producing and consuming messages of the same size as
one trace's SpanBatch. Pipeline: one worker process (assembler, router, scorer, alerter, sink), or the
sink apart (--split-sink), or one process per role (--split-roles), scoring every trace with two code
scorers; after a warm-up of a few traces, the clock stops when the last score row is in chDB.
Then a latency phase sends traces at a steady rate (half the throughput measured), bundled as the SDK's
flush bundles them every 100 ms (`--latency-flush-s 0`: one message per trace, as before), and reads, per score
row, the time from its trace's close to the row's insert. EVALSTREAM_* variables reach the worker.

CPU per trace (`bench/cpu.py`): utime + stime from /proc/<pid>/stat of the broker (Tansu), each worker
process (with its children) and the bench's producer, sampled when the traces start to go out and when the
last score row is stored; the producer's is its own process over the sending only. The same is sampled over
the latency phase (`steady`), and over an idle window before the run (nothing sent: fetch polling, timers).
Part of each process's CPU goes by the second, not by the trace: the idle figure (ms/s) shows how much.
The raw baseline reports the broker's CPU (and the aiokafka client's) per message produced and consumed.
At the end, every evalstream topic is read back (messages and bytes the pipeline wrote per trace), and the
tables' active parts give the rows and bytes stored per trace.
Printed as a table and as one JSON line (the last line of the output).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu import CpuMeter, CpuReport, Phase, cpu_s, native_thread_s
from pipeline.admin import ensure_topics
from pipeline.contracts import pack_items
from pipeline.embedded import EMBEDDED_TOPIC_PARTITIONS, EmbeddedBroker
from pipeline.topics import partition_for
from pipeline.worker.app import STORAGE_PROBE_INTERVAL_S
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


def trace_batches(n: int, spans: int, prefix: str = "b", start: int = 0) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, start + n):
        trace_id = f"{prefix}{i:07d}"
        root = span(trace_id, f"{trace_id}-r", None, "root", dur_ms=20)
        kids = [span(trace_id, f"{trace_id}-{j}", root["span_id"], f"tool{j % 3}", start_ms=j, span_type="tool",
                     inputs={"q": f"query {j}"}, outputs={"ok": True}) for j in range(spans - 1)]
        out.append((trace_id.encode(), batch(trace_id, [root, *kids], final=True)))
    return out


def bundled(messages: list[tuple[bytes, bytes]], per_message: int, partitions: int) -> list[tuple[bytes, bytes]]:
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


async def raw_broker(bootstrap: str, messages: list[tuple[bytes, bytes]], broker_pid: int) -> dict[str, float]:
    """Produce then consume `messages` with plain aiokafka: rates (msg/s) and the CPU seconds of the broker and of
    this process (the client) in each phase."""
    topic = "bench.raw"
    meter = CpuMeter({"broker": broker_pid, "client": os.getpid()}, children={"client": False})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=16 * 1024 * 1024)
    await producer.start()
    meter.start()
    started = time.perf_counter()
    for key, value in messages:
        await producer.send(topic, value, key=key)
    await producer.flush()
    produce_s = time.perf_counter() - started
    produce_cpu = meter.stop()
    await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=10, max_partition_fetch_bytes=16 * 1024 * 1024)
    await consumer.start()
    meter.start()
    started, seen = time.perf_counter(), 0
    while seen < len(messages):
        for records in (await consumer.getmany(timeout_ms=1000)).values():
            seen += len(records)
    consume_s = time.perf_counter() - started
    consume_cpu = meter.stop()
    await consumer.stop()
    return {"produce_msg_s": len(messages) / produce_s, "consume_msg_s": len(messages) / consume_s,
            "produce_broker_cpu_s": produce_cpu["broker"], "produce_client_cpu_s": produce_cpu["client"],
            "consume_broker_cpu_s": consume_cpu["broker"], "consume_client_cpu_s": consume_cpu["client"]}


def flushes(messages: list[tuple[bytes, bytes]], rate: float, flush_s: float, partitions: int
            ) -> tuple[list[tuple[bytes, bytes]], list[float]]:
    """Traces arriving at `rate` per second, sent as the SDK sends them: every `flush_s` (its flush interval),
    the traces of that interval in one SpanBundle per partition. The messages, and when to send each (s)."""
    per_flush = max(1, round(rate * flush_s))
    out: list[tuple[bytes, bytes]] = []
    at: list[float] = []
    for k, start in enumerate(range(0, len(messages), per_flush)):
        window = bundled(messages[start:start + per_flush], per_flush, partitions)
        out += window
        at += [k * per_flush / rate] * len(window)
    return out, at


async def produce(bootstrap: str, messages: list[tuple[bytes, bytes]], rate: float | None = None,
                  at: list[float] | None = None) -> float:
    """Send as fast as the producer goes, or at `rate` messages/s in 10 ms steps, or each at its time in `at`."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=16 * 1024 * 1024)
    await producer.start()
    started = time.perf_counter()
    for i, (key, value) in enumerate(messages):
        due = at[i] if at is not None else i / rate if rate is not None else None
        if due is not None and (ahead := due - (time.perf_counter() - started)) > 0.01:
            await asyncio.sleep(ahead)
        await producer.send("evalstream.spans.v1", value, key=key)
    await producer.flush()
    await producer.stop()
    return started


async def topic_volume(bootstrap: str, timeout_s: float = 300) -> dict[str, tuple[int, int]]:
    """Messages and payload bytes (key + value) in every `evalstream*` topic, the Faust changelogs included,
    read from the beginning: what the pipeline wrote to the broker (before replication and record overhead)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10,
                                max_partition_fetch_bytes=16 * 1024 * 1024)
    await consumer.start()
    try:
        names = sorted(t for t in await consumer.topics() if t.startswith("evalstream"))
        parts = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        begins = await consumer.beginning_offsets(parts)
        todo = {tp for tp in parts if ends[tp] > begins[tp]}
        volume = dict.fromkeys(names, (0, 0))
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(*todo, timeout_ms=1000)).items():
                count, size = volume[tp.topic]
                volume[tp.topic] = (count + len(records), size + sum(max(0, r.serialized_key_size)
                                                                     + max(0, r.serialized_value_size)
                                                                     for r in records))
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
        return {t: v for t, v in volume.items() if v[0]}
    finally:
        await consumer.stop()


def stored_volume(sink: WorkerProcess) -> dict[str, tuple[int, int, int]]:
    """Rows, compressed and uncompressed bytes of each evalstream table's active parts (merges may still run)."""
    rows = sink.query("SELECT table, sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes)"
                      " FROM system.parts WHERE database = 'evalstream' AND active GROUP BY table ORDER BY table")
    return {table: (int(n), int(packed), int(unpacked)) for table, n, packed, unpacked in rows if int(n)}


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
    shutil.copy(tmp / "profile.raw", out.with_suffix(".folded"))  # the folded stacks, for flame graphs
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


FAUST_ROLES = ("assembler", "router", "scorer", "alerter")
PRODUCER = "producer (bench)"


def timed_produce(bootstrap: str, messages: list[tuple[bytes, bytes]], rate: float | None = None,
                  at: list[float] | None = None) -> tuple[float, float]:
    """`produce`, and the CPU seconds this process spent in it (the bench's producer)."""
    before = cpu_s(os.getpid(), children=False)
    started = asyncio.run(produce(bootstrap, messages, rate, at))
    return started, cpu_s(os.getpid(), children=False) - before


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=3000)
    parser.add_argument("--spans", type=int, default=10)
    parser.add_argument("--traces-per-message", type=int, default=25,
                        help="traces per spans message, packed per partition as the SDK packs a flush (1: one "
                             "SpanBatch per trace, as OpenTelemetry exporters send)")
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument("--split-sink", action="store_true",
                        help="run the sink in a process of its own (as the deploy does), beside the Faust roles")
    layout.add_argument("--split-roles", action="store_true",
                        help="one process per role (assembler, router, scorer, alerter, sink), for CPU per role")
    parser.add_argument("--profile", type=Path, default=None, help="write a py-spy profile of the worker here")
    parser.add_argument("--profile-process", default="faust (4 roles)",
                        help="which process --profile samples, by its name in the CPU table (e.g. sink)")
    parser.add_argument("--latency-traces", type=int, default=2000,
                        help="then send this many traces at a steady rate and measure close -> score row")
    parser.add_argument("--latency-rate", type=float, default=None,
                        help="traces/s of the latency phase (default: half the measured throughput)")
    parser.add_argument("--latency-flush-s", type=float, default=0.1,
                        help="the latency phase sends as the SDK does: every this many seconds (its default flush "
                             "interval), that interval's traces in one SpanBundle per partition; 0: one message per trace")
    parser.add_argument("--partitions", type=int, default=EMBEDDED_TOPIC_PARTITIONS,
                        help="partitions of every topic (default: the embedded stack's, "
                             f"{EMBEDDED_TOPIC_PARTITIONS}; 8 is the production default)")
    parser.add_argument("--whole-closed-states", action="store_true",
                        help="split layouts: give the Faust processes data dirs of their own, so they cannot read "
                             "chDB back through the sink and keep closed traces whole in the changelog (as before "
                             "2026-12-03 evening); by default they run beside the sink, as a second `evalstream "
                             "worker` beside `up` does and as every worker does with a ClickHouse server")
    parser.add_argument("--idle-s", type=float, default=5.0,
                        help="seconds of CPU sampling with nothing sent, before the run (0: none)")
    args = parser.parse_args()
    if args.whole_closed_states and not (args.split_sink or args.split_roles):
        parser.error("--whole-closed-states needs --split-sink or --split-roles: one process reads its own store")
    return args


def start_workers(args: argparse.Namespace, tmp: Path, bootstrap: str, rules: Path
                  ) -> tuple[WorkerProcess, dict[str, WorkerProcess]]:
    """The sink's process (the bench queries its endpoint) and every worker process by name, as laid out by the
    flags: one process with all roles and the sink, the Faust roles beside the sink, or one process per role.
    The Faust processes share the sink's data dir (its run.json names the query endpoint they read storage
    through), unless --whole-closed-states."""
    # the workers' partitions are the topics' (--partitions), whatever EVALSTREAM_TOPIC_PARTITIONS says
    env = {"EVALSTREAM_LOG_LEVEL": "warn", **EXTRA_ENV, "EVALSTREAM_TOPIC_PARTITIONS": str(args.partitions)}
    no_sink = {**env, "EVALSTREAM_SINK_ENABLED": "false"}
    split = args.split_roles or args.split_sink
    sink_name = "sink" if split else "worker (4 roles + sink)"
    data = tmp / "data"
    sink = WorkerProcess(data, bootstrap, rules, {**env, "EVALSTREAM_ROLES": ""} if split else env).start()
    beside = not args.whole_closed_states

    def faust_worker(name: str, extra: dict[str, str]) -> WorkerProcess:
        return WorkerProcess(data if beside else tmp / name, bootstrap, rules, {**no_sink, **extra}, beside=beside)

    if args.split_roles:
        workers = {role: faust_worker(role, {"EVALSTREAM_ROLES": role}) for role in FAUST_ROLES}
    elif args.split_sink:  # the Faust roles in one process, the sink (chDB) in another: one per core
        workers = {"faust (4 roles)": faust_worker("front", {})}
    else:
        workers = {}
    for worker in workers.values():
        worker.start()
    assemblers = [w for name, w in workers.items() if name in ("assembler", "faust (4 roles)")] or [sink]
    if beside or not split:
        for worker in assemblers:  # it probes storage every 10 s; closed states are compact from then on
            worker.wait_for(lambda w=worker: w.metric("evalstream_assembly_storage_readable") == 1, timeout_s=60,
                            what="the assembler reading storage back")
    else:  # as long to settle as the wait above (a worker's first seconds are busy: imports, the price table)
        time.sleep(STORAGE_PROBE_INTERVAL_S)
    return sink, {**workers, sink_name: sink}


WARM_UP_TRACES = 16


def warm_up(sink: WorkerProcess, bootstrap: str, spans: int, n: int = WARM_UP_TRACES) -> None:
    """A few traces end to end before the clock starts: every role is running and has partitions."""
    asyncio.run(produce(bootstrap, trace_batches(n, spans, prefix="w")))
    sink.wait_for(lambda: sink.scalar("SELECT count() FROM evalstream.scores WHERE startsWith(trace_id, 'w')")
                  >= 2 * n, timeout_s=120, what="the warm-up traces' scores")


def main() -> None:
    args = parse_args()
    per_trace = trace_batches(args.traces, args.spans)
    messages = bundled(per_trace, args.traces_per_message, args.partitions)
    size = sum(len(v) for _, v in messages) / len(messages)

    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_file=Path(tmp) / "broker.log") as broker:
        assert broker.pid is not None
        asyncio.run(ensure_topics(broker.bootstrap, partitions=args.partitions))
        raw = asyncio.run(raw_broker(broker.bootstrap, messages, broker.pid))
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(RULES)
        sink, workers = start_workers(args, Path(tmp), broker.bootstrap, rules)
        try:
            time.sleep(12)  # let the consumer groups join (Tansu: half the session timeout each)
            warm_up(sink, broker.bootstrap, args.spans)
            pids = {"broker (Tansu)": broker.pid}
            pids.update({name: w.process.pid for name, w in workers.items() if w.process is not None})
            meter = CpuMeter(pids)
            idle = None
            if args.idle_s > 0:
                meter.start()
                time.sleep(args.idle_s)
                idle = Phase(meter.stop(), 0, args.idle_s)
            before = sink.scalar("SELECT count() FROM evalstream.scores")
            profiled = workers.get(args.profile_process, workers.get("faust (4 roles)", sink))
            spy = start_profile(profiled, args.profile, Path(tmp)) if args.profile else None
            meter.start()
            store_before = native_thread_s(sink.process.pid) if sink.process is not None else 0.0
            started, producer_cpu = timed_produce(broker.bootstrap, messages)
            sink.wait_for(lambda: sink.scalar("SELECT count() FROM evalstream.scores") >= before + 2 * args.traces,
                          timeout_s=1800, what="all scores stored")
            elapsed = time.perf_counter() - started
            run = Phase({**meter.stop(), PRODUCER: producer_cpu}, args.traces, elapsed)
            store_s = (native_thread_s(sink.process.pid) if sink.process is not None else 0.0) - store_before
            if spy is not None:
                finish_profile(spy, args.profile, Path(tmp))
            ledger = Ledger([LedgerRule("errors"), LedgerRule("latency")],
                            spans={key.decode(): args.spans for key, _ in per_trace}, messages=per_trace)
            try:  # decisions and the last inserts may trail the scores by a flush
                sink.wait_for(lambda: not ledger.account(sink.query), timeout_s=30, what="the ledger to balance")
            except AssertionError:
                pass
            problems = ledger.account(sink.query)
            latency_rate = args.latency_rate or max(1.0, args.traces / elapsed / 2)
            latency, steady = measure_latency(sink, broker.bootstrap, args.latency_traces, args.spans, latency_rate,
                                              meter, args.latency_flush_s, args.partitions)
            stored = stored_volume(sink)
        finally:
            for worker in workers.values():
                worker.stop()
        volume = asyncio.run(topic_volume(broker.bootstrap))

    cpu = CpuReport(run, "broker (Tansu)", steady=steady, idle=idle)
    report(args, raw, len(messages), size, problems, latency, latency_rate, cpu, volume, stored,
           1000 * store_s / args.traces)


def report(args: argparse.Namespace, raw: dict[str, float], n_messages: int, size: float,
           problems: list[str], latency: tuple[float, float, float, float] | None, latency_rate: float,
           cpu: CpuReport, volume: dict[str, tuple[int, int]], stored: dict[str, tuple[int, int, int]],
           store_ms: float) -> None:
    elapsed = cpu.run.wall_s
    traces_s = args.traces / elapsed
    per_message = args.traces / n_messages
    produce_rate, consume_rate = raw["produce_msg_s"], raw["consume_msg_s"]
    print(f"traces: {args.traces} of {args.spans} spans in {n_messages} messages ({per_message:.1f} traces, "
          f"{size:.0f} B per message); {args.partitions} partitions per topic")
    raw_cpu = {}
    for phase, rate in (("produce", produce_rate), ("consume", consume_rate)):
        broker_ms = 1000 * raw[f"{phase}_broker_cpu_s"] / n_messages
        client_ms = 1000 * raw[f"{phase}_client_cpu_s"] / n_messages
        raw_cpu[phase] = {"msg_s": round(rate, 1), "traces_s": round(rate * per_message, 1),
                          "broker_ms_per_msg": round(broker_ms, 4),
                          "broker_ms_per_trace": round(broker_ms / per_message, 4),
                          "client_ms_per_msg": round(client_ms, 4),
                          "client_ms_per_trace": round(client_ms / per_message, 4)}
        print(f"raw broker   {phase}: {rate:10.0f} msg/s  ({rate * per_message:10.0f} traces/s, "
              f"{rate * per_message * args.spans:10.0f} spans/s); CPU per trace: "
              f"broker {broker_ms / per_message:.3f} ms, aiokafka client {client_ms / per_message:.3f} ms")
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
    print(f"CPU per process (/proc utime+stime, {cpu.run.wall_s:.1f} s run; producer: its sending only; steady: "
          f"the latency phase, sent as the SDK flushes (--latency-flush-s); idle: {args.idle_s:g} s, nothing sent; work: the run's CPU less the idle rate times its wall time):")
    print(cpu.table())
    print(f"of the sink's: chDB's own threads {store_ms:.3f} ms/trace (merges, background pools: the store's work, "
          f"done by the ClickHouse server in production; its inserts run on the sink's Python thread)")
    sent = WARM_UP_TRACES + args.traces + max(0, args.latency_traces)  # every trace the broker saw
    print(f"written to the broker per trace ({sent} traces: warm-up, run and latency phase; payload bytes, "
          f"before replication):")
    for topic, (count, written) in volume.items():
        print(f"  {topic:<44}{count / sent:8.3f} msg{written / sent:10.0f} B")
    total_bytes = sum(written for _, written in volume.values())
    print(f"  {'all':<44}{sum(c for c, _ in volume.values()) / sent:8.3f} msg{total_bytes / sent:10.0f} B")
    print("stored in ClickHouse per trace (active parts; rows, compressed and uncompressed bytes):")
    for table, (rows, packed, unpacked) in stored.items():
        print(f"  {table:<44}{rows / sent:8.2f} rows{packed / sent:9.0f} B{unpacked / sent:9.0f} B")
    rows, packed, unpacked = (sum(column) for column in zip(*stored.values(), strict=True)) if stored else (0, 0, 0)
    print(f"  {'all':<44}{rows / sent:8.2f} rows{packed / sent:9.0f} B{unpacked / sent:9.0f} B")
    layout = "split-roles" if args.split_roles else "split-sink" if args.split_sink else "one-process"
    print(json.dumps({
        "bench": "e2e_throughput", "traces": args.traces, "spans": args.spans, "messages": n_messages,
        "traces_per_message": args.traces_per_message, "layout": layout, "partitions": args.partitions,
        "closed_states": "whole" if args.whole_closed_states else "compact",
        "env": {k: v for k, v in EXTRA_ENV.items()}, "traces_s": round(traces_s, 1), "elapsed_s": round(elapsed, 2),
        "ledger_ok": not problems, "ledger_problems": problems, "raw": raw_cpu,
        "latency_ms": None if not latency else dict(zip(("p50", "p95", "p99", "max"),
                                                        (round(x, 1) for x in latency), strict=True)),
        "latency_rate": round(latency_rate, 1), "cpu": cpu.as_dict(), "sink_chdb_threads_ms_per_trace": round(store_ms, 4),
        "topics": {"traces_sent": sent, **{t: {"messages": c, "bytes": b, "bytes_per_trace": round(b / sent, 1)}
                                           for t, (c, b) in volume.items()},
                   "bytes_per_trace": round(total_bytes / sent, 1)},
        "stored": {t: {"rows": r, "compressed_bytes": p, "bytes": u} for t, (r, p, u) in stored.items()}}))


def measure_latency(worker: WorkerProcess, bootstrap: str, n: int, spans: int, rate: float, meter: CpuMeter,
                    flush_s: float, partitions: int) -> tuple[tuple[float, float, float, float] | None, Phase | None]:
    """Send n traces at a steady rate (as the SDK does every `flush_s`, or one message per trace when 0), wait
    for their scores, and read each score row's insert time against its trace's close time from the tables
    (`scores.ingested_at` - `traces.closed_at`); with the processes' CPU over the phase, from the first send to
    the last score row."""
    if n <= 0:
        return None, None
    before = worker.scalar("SELECT count() FROM evalstream.scores")
    meter.start()
    traces = trace_batches(n, spans, prefix="l")
    if flush_s > 0:
        messages, at = flushes(traces, rate, flush_s, partitions)
        started, producer_cpu = timed_produce(bootstrap, messages, at=at)
    else:
        started, producer_cpu = timed_produce(bootstrap, traces, rate=rate)
    worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.scores") >= before + 2 * n,
                    timeout_s=600, what="the latency phase's scores")
    steady = Phase({**meter.stop(), PRODUCER: producer_cpu}, n, time.perf_counter() - started)
    (row,) = worker.query(
        "SELECT quantiles(0.5, 0.95, 0.99)(ms), max(ms) FROM (SELECT (toUnixTimestamp64Micro(s.ingested_at)"
        " - toUnixTimestamp64Micro(t.closed_at)) / 1000 AS ms FROM evalstream.scores AS s"
        " INNER JOIN evalstream.traces AS t ON s.trace_id = t.trace_id AND s.trace_version = t.version"
        " WHERE startsWith(s.trace_id, 'l'))")
    (p50, p95, p99), worst = row[0], row[1]
    return (p50, p95, p99, worst), steady


if __name__ == "__main__":
    main()
