"""The backfill's terminal output: a rich progress bar (done / total, rate, ETA) and the summary lines."""

from __future__ import annotations

import datetime as dt

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

OUTCOMES = ("scored", "failed", "sampled_out", "filtered_out", "deferred")


class RateColumn(ProgressColumn):
    """Items per second over rich's recent window of samples; the unit is the task's `unit` field."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "traces")
        return Text("" if speed is None else f"{speed:,.0f} {unit}/s", style="progress.data.speed")


def make_progress(console: Console) -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, transient=False)


def utc(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} traces/s" if seconds > 0 else "n/a"


def outcome_line(counts: dict[str, int]) -> str:
    shown = [f"{name.replace('_', ' ')} {counts.get(name, 0):,}" for name in OUTCOMES]
    others = [f"{name} {n:,}" for name, n in sorted(counts.items()) if name not in OUTCOMES]
    return " · ".join(shown + others)
