"""CPU per trace of our own handler code, in-process: no broker, no Faust, no ClickHouse.

    .venv/bin/python bench/handlers.py [--traces 6000] [--spans 10] [--traces-per-message 25]
        [--partitions 2] [--passes 5] [--serialize] [--profile out.txt]

`bench/e2e_throughput.py` reports the CPU per trace of the Faust worker process and of the sink. This splits
that figure into what our handlers cost and what the rest costs (Kafka clients, Faust, the event loop). It
feeds the same traces the e2e bench sends (its `trace_batches` and `bundled`: SpanBundles of
`--traces-per-message` whole traces per partition, keyed by their first trace), routed by the same rules (its
`RULES`: two code scorers per trace), through the handlers the Faust agents call, one stage after the other:

  1. assembler + routing: `Assembler.handle` on each spans message. Every trace arrives whole (root ended,
     `final`), so it closes and is routed (`CloseRouter`) in the event that brings it, as in the worker: job
     bundles, then TraceBatches with their decisions. Its table is a plain dict: a Faust table would also
     write each closed state to its changelog topic, which is left out here.
  2. scorer: `ScorerWorker.handle` on each jobs message stage 1 sent: both code scorers of each trace run
     (the built-in ones are async: no thread), and one ScoreResultBatch goes out per bundle.
  3. sink row mapping: `pipeline.storage.sink.rows_for` (the sink's mapping of a message to rows per table)
     on each traces.v2 message of stage 1 and scores.v1 message of stage 2.
  4. with `--serialize` only: the sink's rows as the Native insert blocks clickhouse-connect builds for them
     (`NativeTransform.build_insert`, uncompressed, as for chDB), a block per table each time the pending
     rows reach `sink_batch_rows` (the sink's flush by size). The column types come from the migrations, run
     in a throwaway in-memory chDB in a subprocess (its threads stay out of this process's CPU); nothing of
     the bench is inserted anywhere.

The handlers get a real `WorkerContext` built as `pipeline/worker/app.py` builds it (real `Settings` from the
environment, with `--partitions`; `Counters`, `AssemblyConfig`, `SessionConfig`, `RetryPolicy`, the worker's
`ScorerResolver`, the rules parsed and checked against it), except for what Faust owns: `send` keeps each
message (topic, key, value, partition) in a list instead of producing it to a Faust topic, so `topics` is
empty, and `app` is None (only the timers' `send_ticks`, not measured, read it). The assembler gets no
storage reader (`history`): a trace closed whole in its first version never asks storage. Garbage collection
is tuned as the worker tunes it (`pipeline.worker.runner.tune_gc`) after the warm-up.

Left out, so counted in the e2e figures but not here: the Kafka clients (fetch, decoding record batches,
produce, acks), Faust's streams, agents and event dispatch, table changelogs and offset commits, the event
loop's wakeups between messages, the timers (ticks, metrics, lag), the sink's consumer and its insert
(clickhouse-connect's part of it only with `--serialize`; chDB's never), and the alerter (RULES has no
alert rule: its matcher returns at once).

Each stage's CPU is process CPU (`time.process_time`: every thread) over that stage's messages, built
beforehand. One pass (fresh contexts, tables, assembler and scorer) is run as a warm-up, then `--passes`
measured ones: best and median per stage. Every pass is checked: every trace closed once, two jobs and two
`scored` results per trace, the rows the sink would write, no dead letter, nothing forwarded; the script
exits non-zero otherwise. `--profile` writes a cProfile of one more pass (own and cumulative time).
Printed as a table and as one JSON line (the last line of the output).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import faust
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.e2e_throughput import RULES, bundled, trace_batches
from pipeline import topics
from pipeline.assembly import AssemblyConfig
from pipeline.contracts import ScoreJobBundle, ScoreResultBatch, ScoreStatus, TraceBatch, decode
from pipeline.metrics import Counters
from pipeline.pricing import LiteLLMPrices
from pipeline.rules import parse_rules
from pipeline.rules.versions import ActiveRules
from pipeline.scoring import RetryPolicy
from pipeline.scoring.resolvers import worker_resolver
from pipeline.sessions import SessionConfig
from pipeline.settings import Settings
from pipeline.storage.sink import _TABLES as SINK_COLUMNS
from pipeline.storage.sink import rows_for
from pipeline.worker.assembler import Assembler
from pipeline.worker.context import WorkerContext
from pipeline.worker.runner import tune_gc
from pipeline.worker.scorer import ScorerWorker
from scorers.registry import ScorerResolver

Rows = dict[str, list[list[Any]]]  # rows per table, as `rows_for` gives them
JOBS_PER_TRACE = 2  # RULES: two trace rules, each with a code scorer, every trace sampled
STAGES = {  # stage: (label, the e2e process it runs in)
    "assembler": ("assembler + routing (Assembler.handle)", "faust"),
    "scorer": ("scorer (ScorerWorker.handle)", "faust"),
    "sink": ("sink row mapping (rows_for)", "sink"),
    "serialize": ("sink insert blocks (clickhouse-connect)", "sink"),
}


@dataclass(frozen=True, slots=True)
class Message:
    """What the handlers read of a Faust event's message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: float = 0.0


@dataclass(frozen=True, slots=True)
class Event:
    message: Message


class Sent(NamedTuple):
    topic: str
    key: bytes
    value: bytes
    partition: int | None


@dataclass
class CapturingContext(WorkerContext):
    """The worker's context, with Faust's topics replaced by a list: what the handlers send is kept, in order.
    `dead_letter` is the real one (a counter, then `send` to the dead-letter topic)."""

    sent: list[Sent] = field(default_factory=list, repr=False)

    async def send(self, topic: str, key: str | bytes, value: bytes, partition: int | None = None) -> None:
        self.sent.append(Sent(topic, key.encode() if isinstance(key, str) else key, value, partition))

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]


@dataclass(frozen=True)
class Worker:
    """What a worker process builds once (settings, resolver, rules); `context()` is what each pass gets fresh."""

    settings: Settings
    rules: ActiveRules
    scorers: ScorerResolver

    @classmethod
    def build(cls, partitions: int) -> Worker:
        settings = Settings(topic_partitions=partitions)  # as e2e_throughput sets EVALSTREAM_TOPIC_PARTITIONS
        scorers = worker_resolver(settings)
        ruleset = parse_rules(yaml.safe_load(RULES), source="bench/e2e_throughput.py RULES", scorers=scorers)
        return cls(settings, ActiveRules.of(ruleset), scorers)

    def context(self) -> CapturingContext:
        settings = self.settings
        return CapturingContext(
            app=cast(faust.App, None), settings=settings, rules=self.rules, counters=Counters(), topics={},
            assembly=AssemblyConfig.from_settings(settings), sessions=SessionConfig.from_settings(settings),
            retry_policy=RetryPolicy.from_settings(settings), scorers=self.scorers)


class InsertBlocks:
    """The Native blocks clickhouse-connect writes for the sink's inserts (`--serialize`)."""

    CODE = """
import json
from pipeline.storage.client import connect
from pipeline.storage.migrations import migrate
client = connect("chdb://memory")
migrate(client, "evalstream", 30)
print(json.dumps(client.query("SELECT table, name, type FROM system.columns WHERE database = 'evalstream'").result_rows))
"""

    def __init__(self, batch_rows: int) -> None:
        import clickhouse_connect.datatypes  # noqa: F401 - registers the types get_from_name knows
        from clickhouse_connect.datatypes.registry import get_from_name

        out = subprocess.run([sys.executable, "-c", self.CODE], cwd=ROOT, capture_output=True, text=True, check=True)
        names: dict[str, dict[str, str]] = {}
        for table, column, type_name in json.loads(out.stdout.splitlines()[-1]):
            names.setdefault(table, {})[column] = type_name
        self.types = {table: [get_from_name(names[table][c]) for c in columns]
                      for table, columns in SINK_COLUMNS.items() if table in names}
        self.batch_rows = batch_rows

    def build(self, mapped: list[Rows]) -> int:
        """Rows pending as the sink holds them, a flush each time they reach `batch_rows` (and at the end):
        a block per table. Returns the bytes built."""
        from clickhouse_connect.driver.insert import InsertContext
        from clickhouse_connect.driver.transform import NativeTransform

        size, count = 0, 0
        pending: Rows = {}

        def flush() -> int:
            built = 0
            for table, table_rows in pending.items():
                if table_rows:
                    context = InsertContext(table, SINK_COLUMNS[table], self.types[table], data=table_rows)
                    built += sum(len(block) for block in NativeTransform.build_insert(context))
            pending.clear()
            return built

        for tables in mapped:
            for table, table_rows in tables.items():
                pending.setdefault(table, []).extend(table_rows)
                count += len(table_rows)
            if count >= self.batch_rows:
                size += flush()
                count = 0
        return size + flush()


def events(messages: Iterable[tuple[str, bytes, bytes, int]]) -> list[Event]:
    """(topic, key, value, partition) -> events, with offsets counted per partition."""
    offsets: Counter[tuple[str, int]] = Counter()
    out = []
    for topic, key, value, partition in messages:
        out.append(Event(Message(topic, partition, offsets[(topic, partition)], key, value)))
        offsets[(topic, partition)] += 1
    return out


@dataclass(repr=False)  # asyncio may repr a task's result: not the thousands of messages it holds
class Pass:
    cpu_s: dict[str, float]  # per stage
    assembler: CapturingContext
    scorer: CapturingContext
    rows: Counter[str]  # rows the sink would write, per table
    insert_bytes: int = 0  # of the Native insert blocks (--serialize)


async def run_pass(worker: Worker, spans_in: list[Event], blocks: InsertBlocks | None) -> Pass:
    clock = time.process_time
    cpu: dict[str, float] = {}

    assembler_ctx = worker.context()
    assembler = Assembler(assembler_ctx, {}, LiteLLMPrices(), history=None)
    started = clock()
    for event in spans_in:
        await assembler.handle(event)
    cpu["assembler"] = clock() - started

    jobs_in = events((s.topic, s.key, s.value, s.partition or 0) for s in assembler_ctx.on(topics.JOBS))
    scorer_ctx = worker.context()
    scorer = ScorerWorker(scorer_ctx)
    started = clock()
    for event in jobs_in:
        await scorer.handle(event)
    cpu["scorer"] = clock() - started

    sink_in = [(s.topic, s.value) for s in (*assembler_ctx.on(topics.TRACES), *scorer_ctx.on(topics.SCORES))]
    max_bytes = worker.settings.max_message_bytes
    mapped: list[Rows] = []
    started = clock()
    for topic, value in sink_in:
        mapped.append(rows_for(topic, value, max_bytes))
    cpu["sink"] = clock() - started

    insert_bytes = 0
    if blocks is not None:
        started = clock()
        insert_bytes = blocks.build(mapped)
        cpu["serialize"] = clock() - started

    rows: Counter[str] = Counter()
    for tables in mapped:
        for table, table_rows in tables.items():
            rows[table] += len(table_rows)
    return Pass(cpu, assembler_ctx, scorer_ctx, rows, insert_bytes)


def problems(run: Pass, n: int, spans: int) -> list[str]:
    """What is wrong with a pass's output (nothing, if every trace went through as in the e2e bench)."""
    out = []
    for name, ctx in (("assembler", run.assembler), ("scorer", run.scorer)):
        dead = ctx.on(topics.DEAD_LETTERS)
        if dead:
            out.append(f"{name}: {len(dead)} dead letter(s), the first: {dead[0].value[:300]!r}")
    forwarded = run.assembler.on(topics.SPANS)
    if forwarded:
        out.append(f"assembler: {len(forwarded)} SpanBatch(es) forwarded to another partition")
    unlimited = 1 << 40
    closed = [t.trace_id for s in run.assembler.on(topics.TRACES)
              for t in decode(s.value, TraceBatch, max_bytes=unlimited).traces]
    if len(closed) != n or len(set(closed)) != n:
        out.append(f"assembler: {len(closed)} traces closed ({len(set(closed))} distinct), expected {n}")
    jobs = sum(len(b.jobs) for s in run.assembler.on(topics.JOBS)
               for b in decode(s.value, ScoreJobBundle, max_bytes=unlimited).batches)
    if jobs != JOBS_PER_TRACE * n:
        out.append(f"assembler: {jobs} jobs routed, expected {JOBS_PER_TRACE * n}")
    results = [r for s in run.scorer.on(topics.SCORES)
               for r in decode(s.value, ScoreResultBatch, max_bytes=unlimited).results]
    statuses = Counter(r.status.value for r in results)
    if len(results) != JOBS_PER_TRACE * n or statuses[ScoreStatus.SCORED.value] != len(results):
        out.append(f"scorer: {len(results)} results {dict(statuses)}, expected {JOBS_PER_TRACE * n} scored")
    expected = {"traces": n, "spans": n * spans, "scores": JOBS_PER_TRACE * n,
                "decisions": 2 * JOBS_PER_TRACE * n}  # per job: queued (routing), scored (its result)
    for table, count in expected.items():
        if run.rows[table] != count:
            out.append(f"sink: {run.rows[table]} {table} rows, expected {count}")
    return out


def fail(found: list[str]) -> None:
    if found:
        for problem in found:
            print(f"FAILED: {problem}", file=sys.stderr)
        raise SystemExit(1)


def sent_per_trace(run: Pass, n: int) -> dict[str, dict[str, float]]:
    """Messages and bytes each handler sent, per trace, by topic."""
    out: dict[str, dict[str, float]] = {}
    for name, ctx in (("assembler", run.assembler), ("scorer", run.scorer)):
        for topic in dict.fromkeys(s.topic for s in ctx.sent):
            sent = ctx.on(topic)
            out[f"{name} -> {topic}"] = {"messages": round(len(sent) / n, 4),
                                         "bytes": round(sum(len(s.value) for s in sent) / n, 1)}
    return out


def profile_pass(worker: Worker, spans_in: list[Event], blocks: InsertBlocks | None, out: Path,
                 top: int = 40) -> None:
    """One more pass under cProfile: the functions by own time, then by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(run_pass(worker, spans_in, blocks))
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    out.write_text(text.getvalue())


def report(args: argparse.Namespace, n_messages: int, run: Pass, per_trace: dict[str, tuple[float, float]],
           total: tuple[float, float]) -> None:
    print(f"traces: {args.traces} of {args.spans} spans in {n_messages} spans messages "
          f"({args.traces / n_messages:.1f} traces per message), {args.partitions} partitions; {args.passes} passes "
          f"after a warm-up; checked: every trace closed, {JOBS_PER_TRACE} jobs and {JOBS_PER_TRACE} scored results "
          "per trace, the sink's rows, no dead letter")
    print(f"{'CPU per trace (ms, process_time)':<44}{'best':>9}{'median':>9}  e2e process")
    for stage, (best, median) in per_trace.items():
        label, process = STAGES[stage]
        print(f"{label:<44}{best:9.4f}{median:9.4f}  {process}")
    for process in ("faust", "sink"):
        chosen = [figures for stage, figures in per_trace.items() if STAGES[stage][1] == process]
        print(f"{'  ' + process + ' process stages':<44}{sum(b for b, _ in chosen):9.4f}"
              f"{sum(m for _, m in chosen):9.4f}")
    print(f"{'total (per pass)':<44}{total[0]:9.4f}{total[1]:9.4f}")
    print("not in it: Kafka clients, Faust streams / agents / changelogs, event loop wakeups between messages, "
          "timers, the sink's consumer and chDB" + ("" if args.serialize else ", clickhouse-connect (--serialize)"))
    print("sent per trace (last pass):")
    for what, figures in sent_per_trace(run, args.traces).items():
        print(f"  {what:<52}{figures['messages']:8.4f} msg{figures['bytes']:10.1f} B")
    rows = ", ".join(f"{table} {count / args.traces:g}" for table, count in sorted(run.rows.items()) if count)
    blocks = f"; insert blocks {run.insert_bytes / args.traces:.0f} B" if args.serialize else ""
    print(f"sink rows per trace: {rows}{blocks}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=6000)
    parser.add_argument("--spans", type=int, default=10)
    parser.add_argument("--traces-per-message", type=int, default=25,
                        help="traces per spans message, packed per partition as the SDK packs a flush")
    parser.add_argument("--partitions", type=int, default=2, help="partitions of every topic (the e2e default)")
    parser.add_argument("--passes", type=int, default=5, help="measured passes, after one warm-up pass")
    parser.add_argument("--serialize", action="store_true",
                        help="also build the sink's Native insert blocks with clickhouse-connect (column types "
                             "from the migrations, in an in-memory chDB in a subprocess)")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of one more pass here")
    args = parser.parse_args()
    if args.traces < 1 or args.spans < 1 or args.passes < 1:
        parser.error("--traces, --spans and --passes must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    n = args.traces
    messages = bundled(trace_batches(n, args.spans), args.traces_per_message, args.partitions)
    spans_in = events((topics.SPANS, key, value, topics.partition_for(key.decode(), args.partitions))
                      for key, value in messages)
    worker = Worker.build(args.partitions)
    blocks = InsertBlocks(worker.settings.sink_batch_rows) if args.serialize else None

    async def measure(count: int) -> tuple[list[dict[str, float]], Pass]:
        """`count` passes, each checked: the CPU of each, and the last pass. One pass is alive at a time."""
        cpu_s = []
        last: Pass | None = None
        for _ in range(count):
            last = None  # the next pass starts without the messages of the one before
            last = await run_pass(worker, spans_in, blocks)
            fail(problems(last, n, args.spans))
            cpu_s.append(last.cpu_s)
        assert last is not None
        return cpu_s, last

    asyncio.run(measure(1))  # the warm-up
    tune_gc()
    cpu_s, last = asyncio.run(measure(args.passes))

    def best_and_median(values: list[float]) -> tuple[float, float]:
        ms = [1000 * s / n for s in values]
        return min(ms), statistics.median(ms)

    per_trace = {stage: best_and_median([c[stage] for c in cpu_s]) for stage in cpu_s[0]}
    total = best_and_median([sum(c.values()) for c in cpu_s])
    report(args, len(messages), last, per_trace, total)
    if args.profile is not None:
        profile_pass(worker, spans_in, blocks, args.profile)
        print(f"cProfile of one more pass: {args.profile}")
    print(json.dumps({
        "bench": "handlers", "traces": n, "spans": args.spans, "messages": len(messages),
        "traces_per_message": args.traces_per_message, "partitions": args.partitions, "passes": args.passes,
        "checks_ok": True,
        "ms_per_trace": {stage: {"best": round(best, 4), "median": round(median, 4), "process": STAGES[stage][1]}
                         for stage, (best, median) in per_trace.items()},
        "total_ms_per_trace": {"best": round(total[0], 4), "median": round(total[1], 4)},
        "sent_per_trace": sent_per_trace(last, n),
        "sink_rows_per_trace": {table: count / n for table, count in sorted(last.rows.items()) if count},
        "insert_block_bytes_per_trace": round(last.insert_bytes / n, 1) if args.serialize else None}))


if __name__ == "__main__":
    main()
