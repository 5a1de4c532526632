"""Backfill rate: traces/s for `evalstream backfill` over N stored traces, and where the time goes.

    .venv/bin/python bench/backfill_rate.py [--traces 10000] [--spans 5] [--sampling 1.0]

N traces are written straight into chDB (as the sink would have stored them), then one worker process
(router, scorer, alerter, sink; 8 partitions) starts on that data dir. Timed, in this order:
- read: every page of stored traces through the worker's query endpoint, nothing sent;
- send: the backfill's read + pack + publish + broker acknowledgements (the checkpointed part);
- decide: from the last acknowledgement until every (rule, trace) has its backfill decision stored.
The rule is `error_spans` (a code scorer) with the given sampling rate.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from pipeline.admin import ensure_topics
from pipeline.embedded import EmbeddedBroker
from tests.integration.harness import WorkerProcess

PARTITIONS = 8


def seed(data_dir: str, n: int, spans: int) -> None:
    from pipeline.contracts import Span, Trace
    from pipeline.storage import rows
    from pipeline.storage.client import embedded_dsn
    from pipeline.storage.database import Database
    from pipeline.storage.sink import _TABLES

    base = time.time_ns() - 3600 * 10**9
    batch: dict[str, list[list]] = {"traces": [], "spans": []}
    for i in range(n):
        tid, start = f"b{i:07d}", base + i * 10**6
        root = Span(trace_id=tid, span_id=f"{tid}-r", name="root", start_ns=start, end_ns=start + 20_000_000,
                    status="ok", project="bench")
        kids = [Span(trace_id=tid, span_id=f"{tid}-{j}", parent_span_id=root.span_id, name=f"tool{j % 3}",
                     span_type="tool", start_ns=start + j * 10**6, end_ns=start + j * 10**6 + 10**6,
                     status="error" if i % 10 == 0 and j == 0 else "ok", project="bench",
                     inputs={"q": f"query {j}"}, outputs={"ok": True}) for j in range(spans - 1)]
        trace = Trace(trace_id=tid, version=1, project="bench", status="complete", close_reason="final_marker",
                      root_span_id=root.span_id, name="root", start_ns=start, end_ns=start + 20_000_000,
                      closed_at_ns=start + 30_000_000, spans=[root, *kids])
        batch["traces"].append(rows.trace_row(trace))
        batch["spans"] += [rows.span_row(s, 1) for s in trace.spans]
    db = Database(embedded_dsn(Path(data_dir) / "clickhouse"), "evalstream")
    db.open_sync(30)
    db._insert_many(batch, _TABLES)
    db._client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=10_000)
    parser.add_argument("--spans", type=int, default=5)
    parser.add_argument("--sampling", type=float, default=1.0)
    parser.add_argument("--page-size", type=int, default=500)
    args = parser.parse_args()

    import os

    from pipeline.backfill import BackfillOptions, BackfillSpec, load_backfill_rules, run_backfill
    from pipeline.backfill.stored import StoredTraces, Window
    from pipeline.settings import Settings
    from pipeline.storage.reader import Reader

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(f"rules:\n  - name: errors\n    scorer: error_spans\n    sampling_rate: {args.sampling}\n")
        started = time.perf_counter()
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                f"from backfill_rate import seed; seed({str(data)!r}, {args.traces}, {args.spans})")
        subprocess.run([sys.executable, "-c", code], check=True)
        seed_s = time.perf_counter() - started
        broker = EmbeddedBroker(log_file=Path(tmp) / "broker.log")
        bootstrap = broker.start()
        asyncio.run(ensure_topics(bootstrap, PARTITIONS))
        env = {"EVALSTREAM_TOPIC_PARTITIONS": str(PARTITIONS)}  # log level info: "warning" turns on faust's spinner,
        # which sets the root logger to DEBUG and costs the worker ~10% CPU
        worker = WorkerProcess(data, bootstrap, rules, env).start()
        os.environ.update({"EVALSTREAM_DATA_DIR": str(data), "EVALSTREAM_KAFKA_BOOTSTRAP": bootstrap,
                           "EVALSTREAM_TOPIC_PARTITIONS": str(PARTITIONS)})
        try:
            settings = Settings()
            reader = Reader(settings)
            source = StoredTraces(Window("evalstream", 0, time.time_ns() // 1000), lambda q: reader.query(q).rows)
            started, after, read = time.perf_counter(), None, 0
            while True:
                page = source.page(after, args.page_size)
                if not page.traces:
                    break
                read, after = read + len(page.traces), page.last
            read_s = time.perf_counter() - started
            reader.close()
            assert read == args.traces, read

            ruleset, where = load_backfill_rules(settings, rules)
            quiet = Console(stderr=True, quiet=True)
            started = time.perf_counter()
            result = run_backfill(settings, ruleset, where, BackfillSpec.of(["errors"], "1d"),
                                  BackfillOptions(page_size=args.page_size, poll_interval_s=0.5), quiet, quiet)
            total_s = time.perf_counter() - started
        finally:
            worker.stop()
            broker.stop()
    cp = result.checkpoint
    assert result.complete and cp.sent == args.traces, result
    decide_s = total_s - cp.send_s
    print(f"traces: {args.traces:,} of {args.spans} spans; sampling {args.sampling:g}; page {args.page_size}; "
          f"{PARTITIONS} partitions; one worker (seeded in {seed_s:.1f} s)")
    print(f"read only (query endpoint)   {read_s:6.2f} s  {args.traces / read_s:8,.0f} traces/s")
    print(f"backfill send (read+publish) {cp.send_s:6.2f} s  {args.traces / cp.send_s:8,.0f} traces/s  "
          f"({cp.messages} messages)")
    print(f"then until all decided       {decide_s:6.2f} s")
    print(f"backfill end to end          {total_s:6.2f} s  {args.traces / total_s:8,.0f} traces/s  "
          f"(decisions: {result.decisions})")


if __name__ == "__main__":
    main()
