"""`evalstream backfill`: stored traces back through the live rules and scorers, resumably.

The CLI reads traces (through the running sink's query endpoint for chDB: it never opens chDB
itself while the pipeline runs) and publishes them to `evalstream.backfill.v1`. The workers' routers
apply the named rules' filters and sampling as live, and their scorers score the jobs; every job,
score and decision says `source=backfill`. The checkpoint advances only past pages the broker
acknowledged; re-running the same command resumes there.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.backfill.checkpoint import Checkpoint, RunLock, checkpoint_path
from pipeline.backfill.progress import make_progress, outcome_line, rate, utc
from pipeline.backfill.publisher import BackfillPublisher, pack
from pipeline.backfill.spec import BackfillSpec, check_rules
from pipeline.backfill.stored import StoredTraces, Window
from pipeline.embedded import attached_settings
from pipeline.errors import ConfigError
from pipeline.kafka_security import aiokafka_options
from pipeline.rules.model import RuleSet
from pipeline.runfile import read_run_file
from pipeline.settings import Settings
from pipeline.storage.client import dsn_of, is_embedded
from pipeline.storage.filters import Eq, InSelect, MicrosRange, OneOf, where

TERMINAL = ("filtered_out", "sampled_out", "scored", "failed", "deferred")


@dataclass(frozen=True)
class BackfillOptions:
    page_size: int = 500
    restart: bool = False
    wait: bool = True  # until every (rule, trace) has its decision
    wait_timeout_s: float = 600.0
    poll_interval_s: float = 1.0


@dataclass
class BackfillResult:
    checkpoint: Checkpoint
    resumed: bool
    decisions: dict[str, int] | None  # outcome -> (rule, trace) pairs, when waited for
    complete: bool  # every pair decided (or not waited for)


def load_backfill_rules(settings: Settings, path: Path | None) -> tuple[RuleSet, str]:
    from pipeline.rules import load_rules

    path = path or settings.rules_file
    if path is None:
        raise ConfigError("backfill needs the rules file the workers run: --rules FILE or EVALSTREAM_RULES_FILE")
    return load_rules(path), str(path)


def run_backfill(settings: Settings, ruleset: RuleSet, rules_source: str, spec: BackfillSpec,
                 options: BackfillOptions, console: Console, err: Console) -> BackfillResult:
    from pipeline.storage.reader import Reader

    check_rules(ruleset, spec.rules, rules_source)
    run = read_run_file(settings.run_file)
    bootstrap = settings.kafka_bootstrap or run.get("kafka_bootstrap")
    settings = attached_settings(settings, run)  # topics it creates: the running `up`'s partition count
    if not bootstrap:
        raise ConfigError("no broker: set EVALSTREAM_KAFKA_BOOTSTRAP or start `evalstream up` first")
    if is_embedded(dsn_of(settings)) and not run.get("query_url"):
        raise ConfigError(f"no running pipeline in {settings.data_dir}: start `evalstream up` first; its workers "
                          "route and score the backfill, and its sink serves the stored traces")
    if options.page_size < 1:
        raise ConfigError("--page-size must be at least 1")
    path = checkpoint_path(settings.data_dir, spec)
    with RunLock(path.with_suffix(".lock")):
        if options.restart:
            path.unlink(missing_ok=True)
        reader = Reader(settings)
        try:
            db = reader.database
            cp = Checkpoint.load(path)
            resumed = cp is not None
            if cp is None:
                window_us = spec.window_us(time.time())
                total = StoredTraces(Window(db, *window_us, spec.project), reader.rows).count()
                cp = Checkpoint.new(spec, window_us, min(total, spec.limit or total))
                cp.save(path)
            source = StoredTraces(Window(db, cp.since_us, cp.until_us, cp.project), reader.rows)
            _announce(cp, spec, resumed, err)
            already_sent = cp.done
            if not cp.done:
                cp.runs += 1
                asyncio.run(_send(cp, path, source, BackfillPublisher(bootstrap, settings.max_message_bytes,
                                                                     aiokafka_options(settings)),
                                  options, settings.topic_partitions, err))
            console.print(f"Backfill {cp.backfill_id} ({spec.describe()}): {cp.sent:,} traces sent in "
                          f"{cp.messages:,} messages in {cp.send_s:.1f} s ({rate(cp.sent, cp.send_s)})"
                          + (f"; {len(cp.skipped)} too large to send: {', '.join(cp.skipped[:5])}"
                             if cp.skipped else ""), soft_wrap=True)
            if not options.wait:
                return BackfillResult(cp, resumed, None, True)
            decided, complete, waited_s = _wait(reader, db, source.window, cp, options, err)
        finally:
            reader.close()
    console.print(f"Decisions ({len(cp.rules)} rule(s) × {cp.sent:,} traces): {outcome_line(decided)}",
                  soft_wrap=True)
    if complete:
        if not already_sent:
            console.print(f"All decided {waited_s:.1f} s after the last send; end to end "
                          f"{rate(cp.sent, cp.send_s + waited_s)} (reading, sending, routing, scoring, storing)",
                          soft_wrap=True)
    else:
        err.print(f"[yellow]Not every decision arrived within {options.wait_timeout_s:g} s: the workers go on "
                  "scoring; check with `evalstream sql` (docs/backfill.md).[/]")
    return BackfillResult(cp, resumed, decided, complete)


def _announce(cp: Checkpoint, spec: BackfillSpec, resumed: bool, err: Console) -> None:
    window = f"traces closed {utc(cp.since_us / 1e6)} – {utc(cp.until_us / 1e6)}"
    if not resumed:
        err.print(f"Backfill {cp.backfill_id}: {spec.describe()}; {window}: {cp.total:,} traces", soft_wrap=True)
    elif cp.done:
        err.print(f"Backfill {cp.backfill_id} sent everything at {utc(cp.sent_all_at or 0)} "
                  "(--restart sends it again)", soft_wrap=True)
    elif cp.cursor:
        err.print(f"Backfill {cp.backfill_id}: resuming from trace {cp.cursor[1]} closed at "
                  f"{utc(cp.cursor[0] / 1e6)} ({cp.sent:,} of {cp.total:,} sent; {window})", soft_wrap=True)
    else:
        err.print(f"Backfill {cp.backfill_id}: resuming from the start ({window}: {cp.total:,} traces)",
                  soft_wrap=True)


async def _send(cp: Checkpoint, path: Path, source: StoredTraces, publisher: BackfillPublisher,
                options: BackfillOptions, partitions: int, err: Console) -> None:
    from pipeline.admin import ensure_topics

    await ensure_topics(publisher.bootstrap, partitions, client_options=publisher.client_options)
    await publisher.start()
    budget = (cp.limit - cp.sent - len(cp.skipped)) if cp.limit else math.inf
    max_bytes = publisher.max_message_bytes - 1024
    pending: asyncio.Future | None = None

    async def fetch(after: Any, room: float):
        if room <= 0:
            return None
        return await asyncio.to_thread(source.page, after, int(min(options.page_size, room)))

    try:
        with make_progress(err) as progress:
            task = progress.add_task("sending", total=max(cp.total, 1), completed=cp.sent + len(cp.skipped))
            last = time.perf_counter()
            page = await fetch(tuple(cp.cursor) if cp.cursor else None, budget)
            while page is not None and page.traces:
                budget -= len(page.traces)
                pending = asyncio.ensure_future(fetch(page.last, budget))  # read the next page while sending
                packed = pack(cp.backfill_id, cp.rules, page.traces, max_bytes)
                await publisher.send(cp.backfill_id, packed.messages)
                now = time.perf_counter()
                cp.sent += sum(packed.counts)
                cp.messages += len(packed.messages)
                cp.skipped += packed.oversized
                cp.cursor = list(page.last) if page.last else None
                cp.send_s += now - last
                last = now
                cp.save(path)  # only past what the broker acknowledged
                progress.update(task, advance=len(page.traces))
                page, pending = await pending, None
            cp.sent_all_at = time.time()
            cp.save(path)
            progress.update(task, total=cp.sent + len(cp.skipped), completed=cp.sent + len(cp.skipped))
    finally:
        if pending is not None:
            pending.cancel()
        await publisher.stop()


def decisions_sql(db: str, window: Window, rules: list[str], since_us: int) -> str:
    """This backfill's current decisions by outcome: backfill rows of its rules and traces since it started."""
    in_window = f"SELECT trace_id FROM {db}.traces WHERE {window.closed.sql()}"
    conditions = where(Eq("source", "backfill"), OneOf("rule", rules), MicrosRange("decided_at", since_us),
                       InSelect("trace_id", in_window))
    return f"SELECT outcome, count() FROM {db}.decisions_current {conditions}GROUP BY outcome"


def _wait(reader: Any, db: str, window: Window, cp: Checkpoint, options: BackfillOptions,
          err: Console) -> tuple[dict[str, int], bool, float]:
    expected = cp.sent * len(cp.rules)
    sql = decisions_sql(db, window, cp.rules, int(cp.started_at * 1e6))
    started = time.monotonic()
    counts: dict[str, int] = {}
    with make_progress(err) as progress:
        task = progress.add_task("deciding", total=max(expected, 1), unit="decisions")
        while True:
            counts = {row[0]: int(row[1]) for row in reader.query(sql).rows}
            done = sum(counts.get(o, 0) for o in TERMINAL)
            progress.update(task, completed=min(done, expected))
            if done >= expected:
                return counts, True, time.monotonic() - started
            if time.monotonic() - started > options.wait_timeout_s:
                return counts, False, time.monotonic() - started
            time.sleep(options.poll_interval_s)
