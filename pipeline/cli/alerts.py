"""`evalstream alerts list | test | history`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.common import RulesOpt, app, console, settings_from_env
from pipeline.errors import EvalstreamError
from pipeline.settings import Settings

alerts_app = typer.Typer(help="Alert rules, a test message, and what fired.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


def alert_rules(settings: Settings, rules: Path | None) -> Any:
    from pipeline.rules import load_rules
    from pipeline.scoring.resolvers import scorer_resolver

    path = rules or settings.rules_file
    if path is None:
        raise EvalstreamError("no rules file: pass --rules or set EVALSTREAM_RULES_FILE")
    return load_rules(path, scorers=scorer_resolver(settings))


@alerts_app.command("list")
def alerts_list(rules: RulesOpt = None) -> None:
    """The alert rules of a rules file, and the channel alerts go to."""
    from pipeline.alerts.channels import channel_from_settings

    settings = settings_from_env()
    ruleset = alert_rules(settings, rules)
    for alert in ruleset.alerts:  # one line each: a wide table would wrap the sentence that matters
        group = f"; one incident per {', '.join(alert.group_by)}" if alert.group_by else ""
        console.print(f"[bold]{alert.name}[/] on {alert.rule or '(every rule)'}, when {alert.condition.value}: "
                      f"{alert.describe()}; cooldown {alert.cooldown_s:g}s{group}", soft_wrap=True)
    console.print(f"channel: {channel_from_settings(settings).name}")


@alerts_app.command("test")
def alerts_test(alert_name: Annotated[str, typer.Argument(help="An alert rule's name.")],
                rules: RulesOpt = None) -> None:
    """Send a sample alert for ALERT_NAME to the configured channel and say whether it arrived."""
    import asyncio

    from pipeline.alerts.channels import channel_from_settings
    from pipeline.alerts.message import sample_alert
    from pipeline.contracts import DeliveryStatus

    settings = settings_from_env()
    ruleset = alert_rules(settings, rules)
    alert_rule = next((a for a in ruleset.alerts if a.name == alert_name), None)
    if alert_rule is None:
        raise EvalstreamError(f"no alert named {alert_name!r}; known: {', '.join(a.name for a in ruleset.alerts)}")
    channel = channel_from_settings(settings)
    alert = sample_alert(alert_rule, channel.name, trace_url_template=settings.trace_url_template,
                         dashboard_url_template=settings.alert_dashboard_url_template)
    delivered = asyncio.run(channel.deliver(alert))
    if delivered.delivery_status == DeliveryStatus.FAILED:
        raise EvalstreamError(f"delivery to {channel.name} failed: {delivered.delivery_error}")
    console.print(f"sent to {channel.name}: {delivered.delivery_status.value}")


@alerts_app.command("history")
def alerts_history(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
                   alert: Annotated[str | None, typer.Option(help="Only this alert rule.")] = None,
                   incident: Annotated[str | None, typer.Option(help="Only this incident's messages.")] = None,
                   ) -> None:
    """What fired, digested and resolved, when, and whether it was delivered (works while the pipeline runs)."""
    from pipeline.storage.filters import Eq, where
    from pipeline.storage.reader import Reader

    with Reader(settings_from_env()) as reader:
        result = reader.query(
            f"SELECT fired_at, incident_id AS incident, kind, level, title, delivery_status AS delivery, "
            f"delivery_attempts AS attempts, delivery_error FROM {reader.database}.alerts FINAL "
            f"{where(Eq('alert_rule', alert), Eq('incident_id', incident))} ORDER BY fired_at DESC LIMIT {int(limit)}")
    table = Table(*result.columns)
    for row in result.rows:
        table.add_row(*(escape("" if v is None else str(v)[:80]) for v in row))
    console.print(table)
