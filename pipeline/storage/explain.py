"""`evalstream why`: a trace's versions, decisions and scores, from storage."""

from __future__ import annotations

import re

from rich.console import Console
from rich.table import Table

from pipeline.storage.reader import Reader

_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def explain_trace(reader: Reader, trace_id: str, console: Console) -> bool:
    if not _ID.match(trace_id):
        console.print(f"[red]not a trace id:[/] {trace_id!r}")
        return False
    db = reader.database
    versions = reader.query(
        f"SELECT version, status, close_reason, name, span_count, error_count, round(duration_ms, 1) AS ms, "
        f"closed_at FROM {db}.traces FINAL WHERE trace_id = '{trace_id}' ORDER BY version"
    )
    if not versions.rows:
        console.print(f"Trace {trace_id} is not in storage (not closed yet, or never received).")
        return False
    _print(console, f"Trace {trace_id}", versions.columns, versions.rows)
    decisions = reader.query(
        f"SELECT rule, trace_version AS v, if(request_index > 0, concat(span_id, '#', toString(request_index)), "
        f"span_id) AS span, outcome, reason, decided_at FROM {db}.decisions FINAL "
        f"WHERE trace_id = '{trace_id}' ORDER BY rule, trace_version, span_id, request_index, decided_at"
    )
    _print(console, "Decisions (every rule, every version)", decisions.columns, decisions.rows)
    scores = reader.query(
        f"SELECT rule, scorer, trace_version AS v, if(request_index > 0, concat(span_id, '#', "
        f"toString(request_index)), span_id) AS span, status, value, label, passed, threshold, reason, error_type "
        f"FROM {db}.scores_current WHERE trace_id = '{trace_id}' ORDER BY rule, span_id, request_index"
    )
    _print(console, "Current scores", scores.columns, scores.rows)
    return True


def _print(console: Console, title: str, columns: list[str], rows: list[list]) -> None:
    table = Table(*columns, title=title, title_justify="left")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
    if not rows:
        console.print("  (none)")
