"""Read-only commands over storage: `sql`, `why`, `status`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipeline.cli.common import app, console, print_result, settings_from_env
from pipeline.errors import EvalstreamError


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
    """Explain what happened to a trace: its versions, every rule's decision, and its scores."""
    from pipeline.storage.explain import explain_trace
    from pipeline.storage.reader import Reader

    reader = Reader(settings_from_env())
    try:
        found = explain_trace(reader, trace_id, console)
    finally:
        reader.close()
    if not found:
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Show the running embedded stack: its counters, and the embedded broker's memory (read now)."""
    import urllib.request

    from pipeline.broker_memory import RUN_FILE_KEY, live_status
    from pipeline.runfile import read_run_file

    settings = settings_from_env()
    run = read_run_file(settings.run_file)
    broker = live_status(run.get(RUN_FILE_KEY))
    if not run.get("query_url") and not (broker and broker["running"]):
        console.print("No pipeline is running here.")
        raise typer.Exit(1)
    health = None
    if run.get("query_url"):
        with urllib.request.urlopen(f"{run['query_url']}/health", timeout=5) as response:
            health = json.loads(response.read())
    shown = {"run": {k: v for k, v in run.items() if k != RUN_FILE_KEY}, "health": health}
    if broker is not None:  # the embedded default: Tansu keeps every message in memory (docs/operations.md)
        shown["embedded_broker"] = broker
    console.print_json(data=shown)
