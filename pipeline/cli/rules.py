"""`evalstream rules check | apply | history | status`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.common import RulesOpt, SetOpt, app, attach, console, err, print_result, settings_from_env
from pipeline.cli.scorers import stored_scorers
from pipeline.errors import EvalstreamError

if TYPE_CHECKING:
    from pipeline.rules.health import RuleHealth
    from pipeline.settings import Settings
    from pipeline.storage.reader import Reader

rules_app = typer.Typer(help="Check and apply rules files, list their versions, see whether each rule is running.",
                        no_args_is_help=True)
app.add_typer(rules_app, name="rules")

SinceOpt = Annotated[str, typer.Option("--since", help="The window: 30m, 1h, 24h, 7d or an ISO date.")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table or json")]


@rules_app.command("check")
def rules_check(path: Path, set_: SetOpt = None) -> None:
    """Validate a rules file (and the scorers it names)."""
    from pipeline.rules import load_rules
    from pipeline.scoring.resolvers import scorer_resolver

    settings = settings_from_env()
    ruleset = load_rules(path, set_, scorers=scorer_resolver(settings, stored_scorers(settings)))
    console.print(f"OK: {len(ruleset.rules)} rule(s), {len(ruleset.alerts)} alert(s)")


@rules_app.command("apply")
def rules_apply(path: Path, set_: SetOpt = None) -> None:
    """Validate a rules file as `rules check` does and make it the current rules of every running worker
    (no restart): each switches at the next trace it handles."""
    import asyncio

    from pipeline.kafka_security import aiokafka_options
    from pipeline.rules import load_rules
    from pipeline.rules.store import latest_valid, publish, read_raw
    from pipeline.rules.versions import encode_record, make_record
    from pipeline.scoring.resolvers import scorer_resolver

    settings = settings_from_env()
    settings, bootstrap = attach(settings)
    ruleset = load_rules(path, set_, scorers=scorer_resolver(settings, stored_scorers(settings)))
    record = make_record(ruleset, f"{path} (rules apply{' --set' if set_ else ''})")
    encode_record(record)  # the size limit, before anything is read or sent
    options = aiokafka_options(settings)

    async def run() -> str | None:
        current = latest_valid(await read_raw(bootstrap, client_options=options))
        if current is not None and current.version == record.version:
            return current.version
        await publish(bootstrap, record, client_options=options)
        return None

    if asyncio.run(run()) is not None:
        console.print(f"Version {record.version} is already the current one: nothing to apply")
        return
    console.print(f"Applied version {record.version}: {len(ruleset.rules)} rule(s), {len(ruleset.alerts)} alert(s); "
                  "workers switch at the next trace they handle")


@rules_app.command("history")
def rules_history(format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table"
                  ) -> None:
    """Every rules version applied: when, by whom (user@host), from what, how many rules, and which is current."""
    import asyncio

    from pipeline.kafka_security import aiokafka_options
    from pipeline.rules.store import history, read_raw

    settings = settings_from_env()
    settings, bootstrap = attach(settings)
    records = asyncio.run(read_raw(bootstrap, client_options=aiokafka_options(settings)))
    rows = [[r.version, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.applied_at_ns / 1e9)) + " UTC",
             f"{r.user or '?'}@{r.host or '?'}", r.source, r.rule_count, r.alert_count, "yes" if current else ""]
            for r, current in history(records)]
    print_result(["version", "applied_at", "by", "source", "rules", "alerts", "current"], rows, format)


def window_start(since: str, now: float) -> float:
    from pipeline.storage.filters import parse_time

    try:
        start = parse_time(since, now)
    except ValueError as exc:
        raise EvalstreamError(f"--since {exc}") from None
    if start >= now:
        raise EvalstreamError(f"--since {since} is not in the past")
    return start


def rule_health(settings: Settings, reader: Reader, rules: Path | None, since: float, now: float
                ) -> list[RuleHealth]:
    """Every rule of the rules file (`--rules`, else EVALSTREAM_RULES_FILE; none is fine) and every rule seen in
    storage in [since, now), classified. A rule whose scorer cannot be built here is starved ("scorer missing")."""
    from pipeline.rules import load_rules
    from pipeline.rules.health import assess, scorer_problems
    from pipeline.scoring.resolvers import scorer_resolver
    from pipeline.storage.rule_health import read_figures

    path = rules or settings.rules_file
    file_rules = []
    problems: dict[str, str] = {}
    if path is not None:
        ruleset = load_rules(path)  # the shape only: each scorer is built below, one rule at a time
        file_rules = list(ruleset.rules)
        uploads = stored_scorers(settings) if ruleset.active else None  # None: no broker to ask
        problems = scorer_problems(ruleset.active, scorer_resolver(settings, uploads))
        if uploads is None:
            problems = {rule: f"{problem} (uploaded scorers not checked: no broker)"
                        for rule, problem in problems.items()}
    figures = read_figures(reader, since, now)
    return assess(figures, now=now, window_s=now - since, rules=file_rules, problems=problems)


@rules_app.command("status")
def rules_status(rules: RulesOpt = None, since: SinceOpt = "1h", format: FormatOpt = "table") -> None:
    """Is each rule running? Per rule over the window: traces matched, sampled, scored, failed, errored,
    deferred, the last score, and its state (healthy, erroring, starved, backlogged, idle) with the reason."""
    from pipeline.storage.reader import Reader
    from pipeline.views.rule_health import health_json, print_rule_health

    if format not in ("table", "json"):
        raise EvalstreamError("--format must be table or json")
    settings = settings_from_env()
    now = time.time()
    start = window_start(since, now)
    with Reader(settings) as reader:
        health = rule_health(settings, reader, rules, start, now)
    if format == "json":
        print(json.dumps({"since": since, "window_s": round(now - start, 1), "rules": health_json(health)}))
        return
    print_rule_health(console, health, now)
    err.print(f"{len(health)} rule(s), window {since}")
