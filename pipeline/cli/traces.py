"""`evalstream traces show | list`."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

from pipeline.cli.common import app, console, err, print_result, settings_from_env
from pipeline.errors import EvalstreamError

traces_app = typer.Typer(help="Look at stored traces: a span tree with its scores, or a filtered list.",
                         no_args_is_help=True)
app.add_typer(traces_app, name="traces")


@traces_app.command("show")
def traces_show(trace_id: Annotated[str, typer.Argument(help="The trace id.")],
                version: Annotated[int | None, typer.Option(help="A closed version (default: the latest).")] = None,
                ) -> None:
    """The trace's span tree: each span's agent, duration and status, and the scores attached to it."""
    from pipeline.storage.reader import Reader
    from pipeline.views.trace_tree import load_trace, render

    reader = Reader(settings_from_env())
    try:
        try:
            loaded = load_trace(reader, trace_id, version)
        except ValueError as exc:
            raise EvalstreamError(str(exc)) from None
    finally:
        reader.close()
    if loaded is None:
        err.print(f"Trace {trace_id} is not in storage (not closed yet, or never received); "
                  f"`evalstream why {trace_id}` says more.")
        raise typer.Exit(1)
    info, roots = loaded
    cost = f" · ${info['cost_usd']:.4f}" if info.get("cost_usd") else ""
    title = (f"[bold]trace {escape(trace_id)}[/] v{info['version']} · {escape(str(info['project']))} · "
             f"{info['status']} ({info['close_reason']}) · {info['span_count']} spans · "
             f"{float(info['duration_ms']):.1f} ms{cost}")
    console.print(render(title, roots))


@traces_app.command("list")
def traces_list(
    failed_rule: Annotated[str | None, typer.Option("--failed-rule", help="Only traces this rule failed.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only traces this agent took part in.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    status: Annotated[str | None, typer.Option(help="complete or incomplete.")] = None,
    since: Annotated[str | None, typer.Option(help="Closed since: 30m, 24h, 7d or an ISO date.")] = None,
    until: Annotated[str | None, typer.Option(help="Closed before: a duration ago or an ISO date.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Stored traces, newest first, with the rules that failed on them."""
    from pipeline.storage.filters import parse_time
    from pipeline.storage.reader import Reader
    from pipeline.views.trace_list import TraceFilter

    if status is not None and status not in ("complete", "incomplete"):
        raise EvalstreamError("--status must be complete or incomplete")
    now = time.time()
    try:
        chosen = TraceFilter(failed_rule=failed_rule, agent=agent, project=project, status=status,
                             since=parse_time(since, now) if since else None,
                             until=parse_time(until, now) if until else None, limit=max(1, limit))
    except ValueError as exc:
        raise EvalstreamError(str(exc)) from None
    reader = Reader(settings_from_env())
    try:
        result = reader.query(chosen.sql(reader.database))
    finally:
        reader.close()
    print_result(result.columns, result.rows, format)
