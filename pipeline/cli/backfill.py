"""`evalstream backfill`: stored traces back through the live rules."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.common import RulesOpt, app, console, err, settings_from_env


@app.command()
def backfill(
    rule: Annotated[list[str], typer.Option("--rule", help="A rule to run (repeat for several).")],
    since: Annotated[str, typer.Option(help="Traces closed since: 30m, 24h, 7d or an ISO date.")],
    until: Annotated[str | None, typer.Option(help="Closed before: a duration ago or an ISO date (default: now).")]
    = None,
    project: Annotated[str | None, typer.Option(help="Only this project's traces.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many traces, oldest first.")] = None,
    rules: RulesOpt = None,
    page_size: Annotated[int, typer.Option(min=1, help="Traces read and acknowledged per checkpoint.")] = 500,
    restart: Annotated[bool, typer.Option("--restart", help="Forget the checkpoint and start over.")] = False,
    wait: Annotated[bool, typer.Option(help="Wait until every trace has its decision, then count them.")] = True,
    wait_timeout: Annotated[float, typer.Option(help="Seconds to wait for the decisions.")] = 600.0,
) -> None:
    """Send stored traces back through the live rules and scorers (source=backfill); re-run to resume."""
    from pipeline.backfill import BackfillOptions, BackfillSpec, load_backfill_rules, run_backfill
    from pipeline.rules import check_scorers
    from pipeline.scoring.resolvers import worker_resolver

    settings = settings_from_env()
    spec = BackfillSpec.of(rule, since, until, project, limit)
    ruleset, source = load_backfill_rules(settings, rules)
    check_scorers(ruleset, worker_resolver(settings), source)  # as the workers check them: uploads accepted
    options = BackfillOptions(page_size=page_size, restart=restart, wait=wait, wait_timeout_s=wait_timeout)
    try:
        result = run_backfill(settings, ruleset, source, spec, options, console, err)
    except KeyboardInterrupt:
        err.print("[yellow]Interrupted: everything acknowledged is kept; run the same command to resume.[/]")
        raise typer.Exit(130) from None
    if not result.complete:
        raise typer.Exit(1)
