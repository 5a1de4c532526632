"""`evalstream rules check`."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.common import SetOpt, app, console, settings_from_env
from pipeline.cli.scorers import stored_scorers

rules_app = typer.Typer(help="Check rules files.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@rules_app.command("check")
def rules_check(path: Path, set_: SetOpt = None) -> None:
    """Validate a rules file (and the scorers it names)."""
    from pipeline.rules import load_rules
    from pipeline.scoring.resolvers import scorer_resolver

    settings = settings_from_env()
    ruleset = load_rules(path, set_, scorers=scorer_resolver(settings, stored_scorers(settings)))
    console.print(f"OK: {len(ruleset.rules)} rule(s), {len(ruleset.alerts)} alert(s)")
