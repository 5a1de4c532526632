"""Read-only commands over storage: `sql`, `why`, `status`."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from pipeline.cli.common import RulesOpt, app, console, print_result, settings_from_env
from pipeline.errors import EvalstreamError, RulesError, StorageError
from pipeline.settings import Settings


@app.command()
def sql(query: str, format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table"
        ) -> None:
    """Run a read-only SQL query (works while the pipeline runs)."""
    from pipeline.storage.reader import Reader

    if format not in ("table", "csv", "json"):
        raise EvalstreamError("--format must be table, csv or json")
    reader = Reader(settings_from_env())
    try:
        result = reader.query(query)
    finally:
        reader.close()
    print_result(result.columns, result.rows, format)


@app.command()
def why(trace_id: str) -> None:
    """Explain what happened to a trace: its versions, every rule's decision, and its scores; and, while a
    running worker still holds it, what it is waiting for before it closes."""
    from pipeline.contracts.bounds import LOOKUP_TRACE_ID
    from pipeline.storage.explain import explain_trace
    from pipeline.storage.reader import Reader

    settings = settings_from_env()
    try:
        reader = Reader(settings)
        try:
            found = explain_trace(reader, trace_id, console)
        finally:
            reader.close()
    except StorageError as exc:  # what a worker holds may still say why the trace is not stored
        console.print(f"[red]storage:[/] {exc}")
        found = False
    held = LOOKUP_TRACE_ID.match(trace_id) is not None and _explain_held(settings, trace_id, stored=found)
    if not (found or held):
        raise typer.Exit(1)


def _explain_held(settings: Settings, trace_id: str, *, stored: bool) -> bool:
    """What the running workers' assemblers hold of the trace (an open version, or a closed one kept for late
    spans), from run.json's workers. Whether it printed any."""
    from pipeline.assembly.open_view import lines
    from pipeline.processes import open_trace_views
    from pipeline.runfile import read_run_file

    views, unanswered, answered = open_trace_views(read_run_file(settings.run_file), trace_id)
    shown = [v for v in views if v.get("open") or not stored]
    for view in shown:
        console.print("\n".join(lines(view, str(view.get("worker", "?")))), markup=False, highlight=False)
    for note in unanswered:
        console.print(f"  (could not ask {note})", markup=False, highlight=False)
    if not answered and not unanswered:
        console.print(f"  (no running worker in {settings.run_file} to ask whether it holds the trace open)",
                      markup=False, highlight=False)
    elif not views and not stored and answered:
        console.print(f"  No running worker holds it either ({answered} answered).", markup=False, highlight=False)
    return bool(shown)


@app.command()
def status(rules: RulesOpt = None,
           since: Annotated[str, typer.Option("--since", help="Rule health's window: 30m, 1h, 24h, 7d.")] = "1h",
           format: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table") -> None:
    """The running stack: processes and roles, lag per consumer group, rates in and out, dead letters, the
    embedded broker's memory, and each rule's health. `--format json` gives all of it, structured."""
    from pipeline.broker_memory import RUN_FILE_KEY, live_status
    from pipeline.cli.rules import rule_health, window_start
    from pipeline.processes import fetch_health, worker_processes
    from pipeline.runfile import read_run_file
    from pipeline.storage.reader import Reader
    from pipeline.storage.status import LAG_FRESH_S, read_storage_status
    from pipeline.views.rule_health import health_json
    from pipeline.views.status import print_status

    if format not in ("table", "json"):
        raise EvalstreamError("--format must be table or json")
    settings = settings_from_env()
    run = read_run_file(settings.run_file)
    broker = live_status(run.get(RUN_FILE_KEY))
    running = run.get("query_url") or run.get("metrics_urls") or (broker and broker["running"])
    if not running and settings.clickhouse_dsn is None:
        console.print("No pipeline is running here.")
        raise typer.Exit(1)
    now = time.time()
    start = window_start(since, now)
    shown: dict = {"run": {k: v for k, v in run.items() if k != RUN_FILE_KEY}, "health": fetch_health(run.get("query_url")),
                   "processes": worker_processes(run), "rules_since": since}
    if broker is not None:  # the embedded default: Tansu keeps every message in memory (docs/operations.md)
        shown["embedded_broker"] = broker
    health = []
    try:
        with Reader(settings) as reader:
            shown["storage"] = {"reachable": True, "lag_fresh_s": LAG_FRESH_S, **read_storage_status(reader, now)}
            try:
                health = rule_health(settings, reader, rules, start, now)
            except RulesError as exc:  # the rest of the status still stands
                shown["rules_error"] = str(exc)
                health = rule_health(settings.model_copy(update={"rules_file": None}), reader, None, start, now)
    except StorageError as exc:
        shown["storage"] = {"reachable": False, "error": str(exc)}
    if format == "json":
        print(json.dumps({**shown, "rules": health_json(health)}, default=str))
        return
    print_status(console, shown, health, now)
