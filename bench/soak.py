"""Soak: the embedded stack (`evalstream up`'s layout) fed a steady rate for a set time, sampled every 20 s.

    .venv/bin/python bench/soak.py [--rate 250] [--minutes 30] [--spans 10] [--sample-s 20]
        [--topic-volume changelogs|all|none] [--json-out soak.json]

The stack is `evalstream up`'s: the embedded Tansu broker (`pipeline.embedded.EmbeddedBroker`) and one worker
process with every role plus the sink (chDB), with the settings' defaults (not the tests' fast timers: ticks
every 0.5 s, a 2 s quiet period, closed traces remembered for `reopen_window_s` = 900 s); EVALSTREAM_*
variables reach the worker. Two code scorers score every trace.

Traffic: whole traces of `--spans` spans (a root and its children, `final`), `--rate` per second, sent as the
SDK sends them: every `--flush-s` (100 ms, its flush interval) that interval's traces in one SpanBundle per
partition. The traces are built as they go out, so the bench's memory does not hold them.

Every `--sample-s` it reads, per process (the broker, the worker with its children, the bench's producer),
VmRSS from /proc/<pid>/status and utime + stime from /proc/<pid>/stat, and the traces stored so far. At the end
it waits for every score, checks with the ledger (tests/integration/ledger.py) that every span, trace, decision
and score was stored once, and prints:
- a table over time: traces sent and stored, RSS of the broker and the worker, CPU ms per trace of each
  process over the interval;
- memory per trace: the least-squares slope of each process's RSS against traces sent, over the run and over
  its last half, and the RSS growth over the last half (%);
- CPU per trace (and per second) in the first and the last `--window-min` minutes (a third of the run when it
  is shorter), and the change;
- the issue-22 criteria: every trace stored, RSS growth over the last half < 10%, CPU per trace of the last
  window within 15% of the first;
- with `--topic-volume`, what each topic holds per trace (messages, payload bytes), read back from the start:
  `changelogs` reads the Faust changelogs only (cheap), `all` every evalstream topic (slow after a long run);
- one JSON line (the last line), also written to `--json-out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu import cpu_s
from bench.e2e_throughput import RULES, bundled, trace_batches
from pipeline.admin import ensure_topics
from pipeline.embedded import EMBEDDED_TOPIC_PARTITIONS, EmbeddedBroker
from pipeline.topics import SPANS
from tests.integration.harness import WorkerProcess
from tests.integration.ledger import Ledger, LedgerRule

# `evalstream up`'s defaults, over the harness's fast test timers; the caller's EVALSTREAM_* variables win.
UP_ENV = {"EVALSTREAM_QUIET_PERIOD_S": "2", "EVALSTREAM_IDLE_TIMEOUT_S": "300", "EVALSTREAM_TICK_INTERVAL_S": "0.5",
          "EVALSTREAM_SINK_FLUSH_INTERVAL_S": "0.5", "EVALSTREAM_LOG_LEVEL": "warn"}
EXTRA_ENV = {k: v for k, v in os.environ.items() if k.startswith("EVALSTREAM_") and k != "EVALSTREAM_LONG"}
BROKER, WORKER, PRODUCER = "broker (Tansu)", "worker (4 roles + sink)", "producer (bench)"
WARM_UP = 16
PREFIX = "s"


def rss_bytes(pid: int) -> int:
    """VmRSS of a process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Sample:
    t_s: float
    sent: int
    stored: int
    rss: dict[str, int]
    cpu_s: dict[str, float]


@dataclass
class Soak:
    pids: dict[str, int]
    samples: list[Sample] = field(default_factory=list)

    def sample(self, t_s: float, sent: int, stored: int) -> Sample:
        s = Sample(t_s, sent, stored,
                   {name: rss_bytes(pid) for name, pid in self.pids.items() if name != PRODUCER},
                   {name: cpu_s(pid, children=name != PRODUCER) for name, pid in self.pids.items()})
        self.samples.append(s)
        return s


def traces_due(rate: float, flush_s: float, k: int) -> tuple[int, int]:
    """The traces of flush k (from, to): `rate` per second without drift over many flushes."""
    return int(rate * flush_s * k), int(rate * flush_s * (k + 1))


async def run_traffic(bootstrap: str, args: argparse.Namespace, soak: Soak, stored: Any) -> int:
    """Send for `--minutes` at `--rate`, sampling every `--sample-s`; returns the traces sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=16 * 1024 * 1024)
    await producer.start()
    duration_s = args.minutes * 60
    sent = 0
    started = time.monotonic()
    next_sample = 0.0
    late_s = 0.0
    try:
        k = 0
        while (due := k * args.flush_s) < duration_s:
            if due >= next_sample:
                count = await asyncio.to_thread(stored)
                row = soak.sample(time.monotonic() - started, sent, count)
                print_row(soak, row, args.rate)
                next_sample += args.sample_s
            ahead = due - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
            else:
                late_s = max(late_s, -ahead)
            first, last = traces_due(args.rate, args.flush_s, k)
            if last > first:
                batches = trace_batches(last - first, args.spans, prefix=PREFIX, start=first)
                for key, value in bundled(batches, last - first, args.partitions):
                    await producer.send(SPANS, value, key=key)
                sent = last
            k += 1
        await producer.flush()
    finally:
        await producer.stop()
    count = await asyncio.to_thread(stored)
    print_row(soak, soak.sample(time.monotonic() - started, sent, count), args.rate)
    if late_s > 1.0:
        print(f"warning: the bench's sending fell up to {late_s:.1f} s behind its schedule")
    return sent


def print_header(names: list[str]) -> None:
    cpu = "".join(f"{n.split()[0] + ' ms/tr':>17}" for n in names)
    print(f"{'t (s)':>7}{'sent':>10}{'stored':>10}{'broker RSS MB':>15}{'worker RSS MB':>15}{cpu}", flush=True)


def print_row(soak: Soak, row: Sample, rate: float) -> None:
    previous = soak.samples[-2] if len(soak.samples) > 1 else None
    cells = ""
    for name in soak.pids:
        if previous is None or row.sent == previous.sent:
            cells += f"{'-':>17}"
        else:
            cells += f"{1000 * (row.cpu_s[name] - previous.cpu_s[name]) / (row.sent - previous.sent):17.3f}"
    print(f"{row.t_s:7.0f}{row.sent:10d}{row.stored:10d}{row.rss[BROKER] / 2**20:15.0f}"
          f"{row.rss[WORKER] / 2**20:15.0f}{cells}", flush=True)


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys against xs (None with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return None if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def at_or_after(samples: list[Sample], t_s: float) -> Sample:
    return next((s for s in samples if s.t_s >= t_s - 1e-6), samples[-1])


def at_or_before(samples: list[Sample], t_s: float) -> Sample:
    return next((s for s in reversed(samples) if s.t_s <= t_s + 1e-6), samples[0])


def analyse(samples: list[Sample], names: list[str], window_s: float) -> dict[str, Any]:
    """Memory per trace (slopes), RSS growth over the last half, CPU per trace in the first and last windows."""
    end = samples[-1]
    half = at_or_after(samples, end.t_s / 2)
    window_s = min(window_s, end.t_s / 3)
    first_a, first_b = samples[0], at_or_after(samples, window_s)
    last_a, last_b = at_or_before(samples, end.t_s - window_s), end
    out: dict[str, Any] = {"window_s": round(window_s, 1), "half_at_s": round(half.t_s, 1), "processes": {}}
    for name in names:
        entry: dict[str, Any] = {}
        if name in end.rss:
            whole = slope([s.sent for s in samples], [s.rss[name] for s in samples])
            per_s = slope([s.t_s for s in samples], [s.rss[name] for s in samples])
            later = [s for s in samples if s.t_s >= half.t_s]
            last_half = slope([s.sent for s in later], [s.rss[name] for s in later])
            entry.update({
                "rss_start_mb": round(samples[0].rss[name] / 2**20, 1), "rss_half_mb": round(half.rss[name] / 2**20, 1),
                "rss_end_mb": round(end.rss[name] / 2**20, 1),
                "rss_growth_last_half_pct": round(100 * (end.rss[name] - half.rss[name]) / half.rss[name], 1)
                if half.rss[name] else None,
                "mb_per_hour": None if per_s is None else round(per_s * 3600 / 2**20, 1),
                "kb_per_trace": None if whole is None else round(whole / 1024, 3),
                "kb_per_trace_last_half": None if last_half is None else round(last_half / 1024, 3)})
        first = _ms_per_trace(first_a, first_b, name)
        last = _ms_per_trace(last_a, last_b, name)
        entry.update({"cpu_ms_per_s_first": _ms_per_s(first_a, first_b, name),
                      "cpu_ms_per_s_last": _ms_per_s(last_a, last_b, name),
                      "cpu_ms_per_trace_first": first, "cpu_ms_per_trace_last": last,
                      "cpu_change_pct": round(100 * (last - first) / first, 1) if first and last is not None else None})
        out["processes"][name] = entry
    return out


def _ms_per_s(a: Sample, b: Sample, name: str) -> float | None:
    return None if b.t_s <= a.t_s else round(1000 * (b.cpu_s[name] - a.cpu_s[name]) / (b.t_s - a.t_s), 1)


def _ms_per_trace(a: Sample, b: Sample, name: str) -> float | None:
    return None if b.sent <= a.sent else round(1000 * (b.cpu_s[name] - a.cpu_s[name]) / (b.sent - a.sent), 4)


async def topic_volume(bootstrap: str, which: str, timeout_s: float = 600) -> dict[str, tuple[int, int]]:
    """Messages and payload bytes held in each evalstream topic (`all`) or Faust changelog (`changelogs`), read
    from the start to the last record, counted here (Tansu's end offsets are not those of the last record)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                                max_partition_fetch_bytes=16 * 1024 * 1024)
    await consumer.start()
    try:
        names = sorted(t for t in await consumer.topics() if t.startswith("evalstream")
                       and (which == "all" or t.endswith("-changelog")))
        parts = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        volume = dict.fromkeys(names, (0, 0))
        if not parts:
            return {}
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (batches := await consumer.getmany(timeout_ms=3000)):
            for tp, records in batches.items():
                count, size = volume[tp.topic]
                volume[tp.topic] = (count + len(records), size + sum(max(0, r.serialized_key_size)
                                                                     + max(0, r.serialized_value_size)
                                                                     for r in records))
        return {t: v for t, v in volume.items() if v[0]}
    finally:
        await consumer.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=250.0, help="traces per second")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--spans", type=int, default=10, help="spans per trace")
    parser.add_argument("--flush-s", type=float, default=0.1, help="the SDK's flush interval: one bundle per "
                                                                   "partition every this many seconds")
    parser.add_argument("--partitions", type=int, default=EMBEDDED_TOPIC_PARTITIONS,
                        help="partitions of every topic (default: what `up` makes on the embedded broker)")
    parser.add_argument("--sample-s", type=float, default=20.0)
    parser.add_argument("--window-min", type=float, default=5.0, help="CPU per trace over the first and last "
                                                                      "this many minutes (at most a third of the run)")
    parser.add_argument("--drain-timeout-s", type=float, default=1800.0, help="after sending: wait this long for "
                                                                              "every score")
    parser.add_argument("--topic-volume", choices=("none", "changelogs", "all"), default="changelogs")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the broker's and the worker's logs here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = args.keep or Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        with EmbeddedBroker(log_file=tmp / "broker.log") as broker:
            assert broker.pid is not None
            asyncio.run(ensure_topics(broker.bootstrap, partitions=args.partitions))
            rules = tmp / "rules.yaml"
            rules.write_text(RULES)
            env = {**UP_ENV, "EVALSTREAM_TOPIC_PARTITIONS": str(args.partitions), **EXTRA_ENV}
            worker = SoakWorker(tmp / "data", broker.bootstrap, rules, env).start()
            try:
                result = soak(args, broker, worker)
            finally:
                worker.stop()
            if args.topic_volume != "none":
                volume = asyncio.run(topic_volume(broker.bootstrap, args.topic_volume))
                result["topics"] = {t: {"messages": c, "bytes": b, "bytes_per_trace": round(b / result["traces_total"], 1),
                                        "messages_per_trace": round(c / result["traces_total"], 3)}
                                    for t, (c, b) in volume.items()}
                print_volume(result)
            result["broker_rss_after_stop_mb"] = round(rss_bytes(broker.pid) / 2**20, 1)
    print(json.dumps(result), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    return result


def soak(args: argparse.Namespace, broker: EmbeddedBroker, worker: WorkerProcess) -> dict[str, Any]:
    assert broker.pid is not None and worker.process is not None
    time.sleep(12)  # the consumer groups join (Tansu: about half the session timeout each)
    warm = trace_batches(WARM_UP, args.spans, prefix="w")
    asyncio.run(_send(broker.bootstrap, warm))
    worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.scores WHERE startsWith(trace_id, 'w')")
                    >= 2 * WARM_UP, timeout_s=180, what="the warm-up traces' scores")
    soak = Soak({BROKER: broker.pid, WORKER: worker.process.pid, PRODUCER: os.getpid()})
    available = mem_available_bytes()
    print(f"soak: {args.rate:g} traces/s of {args.spans} spans for {args.minutes:g} min, bundled every "
          f"{args.flush_s:g} s per partition ({args.partitions}); sampling every {args.sample_s:g} s; "
          f"{available / 2**30:.1f} GiB available", flush=True)
    print_header(list(soak.pids))

    def stored() -> int:
        return int(worker.scalar(f"SELECT count() FROM evalstream.traces WHERE startsWith(trace_id, '{PREFIX}')"))

    started = time.monotonic()
    sent = asyncio.run(run_traffic(broker.bootstrap, args, soak, stored))
    send_s = time.monotonic() - started
    traffic_samples = len(soak.samples)
    want = 2 * (sent + WARM_UP)
    drain_started = time.monotonic()
    drained = drain(worker, soak, want, sent, started, args)
    drain_s = time.monotonic() - drain_started
    if not drained:
        print(f"not drained: fewer than {want} scores stored {drain_s:.0f} s after the last send")
    ledger = Ledger([LedgerRule("errors"), LedgerRule("latency")],
                    spans={f"{PREFIX}{i:07d}": args.spans for i in range(sent)})
    try:  # decisions and the last inserts may trail the scores by a flush
        worker.wait_for(lambda: not ledger.account(worker.query), timeout_s=30, what="the ledger to balance")
    except AssertionError:
        pass
    problems = ledger.account(worker.query)
    after = soak.sample(time.monotonic() - started, sent, stored())
    names = list(soak.pids)
    run_samples = soak.samples[:traffic_samples]  # the traffic's samples; those after are the drain's
    analysis = analyse(run_samples, names, args.window_min * 60)
    criteria = criteria_of(analysis, problems)
    report(args, run_samples, analysis, criteria, problems, sent, send_s, drain_s, drained, after, available)
    return {"bench": "soak", "rate": args.rate, "minutes": args.minutes, "spans": args.spans,
            "flush_s": args.flush_s, "partitions": args.partitions, "env": EXTRA_ENV,
            "traces_sent": sent, "traces_total": sent + WARM_UP, "send_s": round(send_s, 1),
            "drain_s": round(drain_s, 1), "drained": drained, "ledger_ok": not problems, "ledger_problems": problems,
            "mem_available_start_gb": round(available / 2**30, 2),
            "analysis": analysis, "criteria": criteria,
            "after_drain": {"t_s": round(after.t_s, 1), "rss_mb": {n: round(v / 2**20, 1) for n, v in after.rss.items()}},
            "samples": [{"t_s": round(s.t_s, 1), "sent": s.sent, "stored": s.stored,
                         "rss_mb": {n: round(v / 2**20, 1) for n, v in s.rss.items()},
                         "cpu_s": {n: round(v, 2) for n, v in s.cpu_s.items()}} for s in run_samples]}


def drain(worker: WorkerProcess, soak: Soak, want: int, sent: int, started: float, args: argparse.Namespace
          ) -> bool:
    """Wait up to `--drain-timeout-s` for `want` scores, still sampling (and printing) every `--sample-s`: a stack
    that fell behind shows how it catches up. Whether every score came."""
    deadline = time.monotonic() + args.drain_timeout_s
    next_sample = time.monotonic() + args.sample_s
    while True:
        if worker.scalar("SELECT count() FROM evalstream.scores") >= want:
            return True
        if time.monotonic() > deadline:
            return False
        if time.monotonic() >= next_sample:
            count = int(worker.scalar(f"SELECT count() FROM evalstream.traces WHERE startsWith(trace_id, '{PREFIX}')"))
            print_row(soak, soak.sample(time.monotonic() - started, sent, count), args.rate)
            next_sample += args.sample_s
        time.sleep(1.0)


class SoakWorker(WorkerProcess):
    """The harness's worker process, with queries that may take minutes: the ledger reads every trace, decision
    and score of a long run through the query endpoint."""

    def query(self, sql: str) -> list[list[Any]]:
        request = urllib.request.Request(f"{self.query_url}/query", data=json.dumps({"sql": sql}).encode())
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                return json.loads(response.read())["rows"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"query failed ({exc.code}): {exc.read().decode(errors='replace')}\n{sql}") from None


def criteria_of(analysis: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """Issue 22's 'done when', for this run: every trace stored; broker and worker RSS grow < 10% over the last
    half; CPU per trace of the last window within 15% of the first (broker and worker)."""
    out: dict[str, Any] = {"every_trace_stored": not problems}
    for name, key in ((BROKER, "broker"), (WORKER, "worker")):
        entry = analysis["processes"][name]
        growth, change = entry.get("rss_growth_last_half_pct"), entry.get("cpu_change_pct")
        out[f"{key}_rss_growth_last_half_under_10pct"] = growth is not None and growth < 10
        out[f"{key}_cpu_per_trace_within_15pct"] = change is not None and abs(change) <= 15
    out["all"] = all(out.values())
    return out


def report(args: argparse.Namespace, samples: list[Sample], analysis: dict[str, Any], criteria: dict[str, Any],
           problems: list[str], sent: int, send_s: float, drain_s: float, drained: bool, after: Sample,
           available: int) -> None:
    stored = "every score stored" if drained else "NOT every score stored"
    print(f"sent {sent} traces in {send_s:.0f} s ({sent / send_s:.1f}/s); {stored} {drain_s:.0f} s after "
          f"the last send; RSS then: " + ", ".join(f"{n} {v / 2**20:.0f} MB" for n, v in after.rss.items()))
    print("ledger: " + ("every span, trace, decision and score stored once" if not problems else "; ".join(problems)))
    print(f"memory per trace (slope of RSS against traces sent) and RSS growth over the last half (from "
          f"{analysis['half_at_s']:.0f} s); CPU per trace over the first and last {analysis['window_s']:.0f} s:")
    print(f"  {'process':<26}{'MB/h':>8}{'KB/trace':>10}{'last half':>11}{'RSS start':>11}{'half':>8}{'end':>8}{'growth':>8}"
          f"{'ms/trace first':>16}{'last':>8}{'change':>8}{'ms/s first':>12}{'last':>7}")
    for name, e in analysis["processes"].items():
        def cell(v: Any, width: int, spec: str) -> str:
            return f"{'-':>{width}}" if v is None else f"{v:{width}{spec}}"
        print(f"  {name:<26}{cell(e.get('mb_per_hour'), 8, '.0f')}{cell(e.get('kb_per_trace'), 10, '.2f')}{cell(e.get('kb_per_trace_last_half'), 11, '.2f')}"
              f"{cell(e.get('rss_start_mb'), 11, '.0f')}{cell(e.get('rss_half_mb'), 8, '.0f')}"
              f"{cell(e.get('rss_end_mb'), 8, '.0f')}{cell(e.get('rss_growth_last_half_pct'), 7, '.1f')}%"
              f"{cell(e.get('cpu_ms_per_trace_first'), 16, '.3f')}{cell(e.get('cpu_ms_per_trace_last'), 8, '.3f')}"
              f"{cell(e.get('cpu_change_pct'), 7, '.1f')}%{cell(e.get('cpu_ms_per_s_first'), 12, '.0f')}"
              f"{cell(e.get('cpu_ms_per_s_last'), 7, '.0f')}")
    broker_kb = analysis["processes"][BROKER].get("kb_per_trace")
    if broker_kb:
        per_hour = broker_kb * 1024 * args.rate * 3600
        print(f"at {args.rate:g} traces/s the broker grows {per_hour / 2**30:.2f} GiB an hour: the "
              f"{available / 2**30:.1f} GiB available at the start last about {available / per_hour:.1f} h")
    print("issue 22 criteria: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in criteria.items()))


def print_volume(result: dict[str, Any]) -> None:
    print(f"held by the broker at the end, per trace ({result['traces_total']} traces; payload bytes, read back):")
    for topic, v in result["topics"].items():
        print(f"  {topic:<48}{v['messages_per_trace']:8.3f} msg{v['bytes_per_trace']:10.0f} B")


async def _send(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(SPANS, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


if __name__ == "__main__":
    main()
