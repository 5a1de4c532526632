"""The `evalstream` command line: one module per command group, all on one Typer app (`common.app`)."""

from __future__ import annotations

import logging
import sys

from rich.markup import escape

from pipeline.cli import alerts, backfill, query, rules, run, scorers, sessions, topics, traces  # noqa: F401 (commands)
from pipeline.cli.common import app, err
from pipeline.errors import EvalstreamError

__all__ = ["app", "main"]


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except EvalstreamError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(2)
