"""What every command shares: the Typer app, the consoles, settings and rules loading, output formats.

A command is the composition root of its process: it reads the Settings once (`settings_from_env`) and
builds what it needs from them, e.g. the `ScorerResolver` its rules are checked with (`scoring/resolvers.py`).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from pipeline.errors import EvalstreamError
from pipeline.settings import Settings
from pipeline.shutdown import Shutdown

if TYPE_CHECKING:
    from scorers.registry import ScorerResolver

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Streaming evaluation for LLM agents.")
console = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay whole lines in logs and pipes

RulesOpt = Annotated[Path | None, typer.Option("--rules", "-r", help="Rules file (YAML or TOML).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a rule field: RULE.FIELD=VALUE.")]
FORMATS = ("table", "csv", "json")


def settings_from_env(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # validated, unlike model_copy
    except ValidationError as exc:
        raise EvalstreamError(f"invalid EVALSTREAM_* setting: {exc}") from None


def load_ruleset(settings: Settings, rules: Path | None, overrides: list[str] | None, scorers: ScorerResolver):
    """The worker's rules file (None without one: it uses the rules topic's current version), its scorers
    checked by the worker's resolver (`scorers`: its uploaded scorers are resolved per job and hot-swapped, so
    a name without a version yet is accepted)."""
    from pipeline.rules import load_rules

    path = rules or settings.rules_file
    if path is None:
        if overrides:
            raise EvalstreamError("--set needs a rules file (--rules or EVALSTREAM_RULES_FILE)")
        err.print("No rules file: the rules applied last (`evalstream rules apply`) are used, if any.")
        return None
    ruleset = load_rules(path, overrides, scorers=scorers)
    err.print(f"Loaded {len(ruleset.active)} rule(s) and {len(ruleset.alerts)} alert(s) from {path}")
    return ruleset


def rules_source(settings: Settings, rules: Path | None, command: str) -> str:
    """How a version was applied, for `rules history`: the file and the command."""
    path = rules or settings.rules_file
    return f"{path} ({command})" if path is not None else command


def install_shutdown(settings: Settings) -> Shutdown:
    """SIGINT / SIGTERM from here on: a graceful stop, ended by force after `stop_timeout_s` or a second signal."""
    shutdown = Shutdown(settings.stop_timeout_s)
    shutdown.install()
    return shutdown


def bootstrap_of(settings: Settings) -> str:
    from pipeline.runfile import read_run_file

    bootstrap = settings.kafka_bootstrap or read_run_file(settings.run_file).get("kafka_bootstrap")
    if not bootstrap:
        raise EvalstreamError("no broker: set EVALSTREAM_KAFKA_BOOTSTRAP or start `evalstream up` first")
    return bootstrap


def attach(settings: Settings) -> tuple[Settings, str]:
    """The broker a command uses (EVALSTREAM_KAFKA_BOOTSTRAP, else the running `evalstream up`'s from run.json)
    and the settings to use it with: those of `up`'s topics when found in run.json (`embedded.attached_settings`:
    the embedded stack's partition count, unless EVALSTREAM_TOPIC_PARTITIONS is set)."""
    from pipeline.embedded import attached_settings
    from pipeline.runfile import read_run_file

    bootstrap = bootstrap_of(settings)
    return attached_settings(settings, read_run_file(settings.run_file)), bootstrap


def print_result(columns: list[str], rows: list[Any], format: str) -> None:
    if format not in FORMATS:
        raise EvalstreamError("--format must be table, csv or json")
    if format == "json":
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str))
    elif format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        from pipeline.views.tables import print_table

        cells = [["" if v is None else str(v) for v in row] for row in rows]
        print_table(console, columns, cells, fold=columns)  # headers whole, values folded, never cut
        err.print(f"{len(rows)} row(s)")
