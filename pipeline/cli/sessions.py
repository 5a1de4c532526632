"""`evalstream sessions show | list`."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

from pipeline.cli.common import app, console, err, print_result, settings_from_env
from pipeline.errors import EvalstreamError

sessions_app = typer.Typer(help="Look at stored sessions (conversations): a transcript with its verdicts, or a "
                                "filtered list.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")


@sessions_app.command("show")
def sessions_show(session_id: Annotated[str, typer.Argument(help="The session id.")],
                  version: Annotated[int | None, typer.Option(help="A version (default: the latest, an open "
                                                                   "snapshot while the session runs).")] = None,
                  ) -> None:
    """The conversation turn by turn, the verdicts judged after each turn, and the closing verdicts."""
    from pipeline.storage.reader import Reader
    from pipeline.views.session_view import load_session, render

    reader = Reader(settings_from_env())
    try:
        view = load_session(reader, session_id, version)
    finally:
        reader.close()
    if view is None:
        which = f" v{version}" if version is not None else ""
        err.print(f"Session {escape(session_id)}{which} is not in storage (no turn of it closed yet, or never "
                  "received).")
        raise typer.Exit(1)
    console.print(render(view))


@sessions_app.command("list")
def sessions_list(
    failed_rule: Annotated[str | None, typer.Option("--rule-failed", "--failed-rule",
                                                    help="Only sessions this rule failed.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    status: Annotated[str | None, typer.Option(help="open, complete or incomplete.")] = None,
    since: Annotated[str | None, typer.Option(help="Updated since: 30m, 24h, 7d or an ISO date.")] = None,
    until: Annotated[str | None, typer.Option(help="Updated before: a duration ago or an ISO date.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Stored sessions (their latest version), newest first, with the rules that failed on them."""
    from pipeline.storage.filters import parse_time
    from pipeline.storage.reader import Reader
    from pipeline.views.session_view import STATUSES, SessionFilter

    if format not in ("table", "csv", "json"):
        raise EvalstreamError("--format must be table, csv or json")
    if status is not None and status not in STATUSES:
        raise EvalstreamError(f"--status must be one of {', '.join(STATUSES)}")
    now = time.time()
    try:
        chosen = SessionFilter(failed_rule=failed_rule, project=project, status=status,
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
