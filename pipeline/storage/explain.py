"""`evalstream why`: a trace's versions, decisions and scores, from storage."""

from __future__ import annotations

import json

from rich.console import Console

from pipeline.contracts.bounds import LOOKUP_TRACE_ID
from pipeline.contracts.evaluation_traces import JUDGE_PROJECT
from pipeline.routing.judge_traces import SKIP_REASON
from pipeline.storage.filters import Eq, where
from pipeline.storage.reader import Reader
from pipeline.views.tables import print_table


def explain_trace(reader: Reader, trace_id: str, console: Console) -> bool:
    if not LOOKUP_TRACE_ID.match(trace_id):
        console.print(f"[red]not a trace id:[/] {trace_id!r}")
        return False
    db, this = reader.database, where(Eq("trace_id", trace_id))
    versions = reader.query(
        f"SELECT version, status, close_reason, name, span_count, error_count, round(duration_ms, 1) AS ms, "
        f"closed_at FROM {db}.traces FINAL {this}ORDER BY version"
    )
    if not versions.rows:
        console.print(f"Trace {trace_id} is not in storage (not closed yet, or never received).")
        return False
    _print(console, f"Trace {trace_id}", versions.columns, versions.rows)
    assembly = reader.query(f"SELECT version, waited_for, reopened_by FROM {db}.traces FINAL "
                            f"{this}ORDER BY version")
    for line in assembly_lines(assembly.rows):
        console.print(line, markup=False, highlight=False)
    decisions = reader.query(
        f"SELECT rule, trace_version AS v, if(request_index > 0, concat(span_id, '#', toString(request_index)), "
        f"span_id) AS span, outcome, reason, rules_version AS rules, decided_at FROM {db}.decisions FINAL "
        f"{this}ORDER BY rule, trace_version, span_id, request_index, decided_at"
    )
    _print(console, "Decisions (every rule, every version)", decisions.columns, decisions.rows)
    if not decisions.rows and _is_judge_trace(reader, trace_id):
        console.print(f"  {SKIP_REASON}; the others skip it without a decision.", markup=False, highlight=False)
    scores = reader.query(
        f"SELECT rule, scorer, trace_version AS v, if(request_index > 0, concat(span_id, '#', "
        f"toString(request_index)), span_id) AS span, span_name, status, value, label, passed, threshold, reason, "
        f"error_type, evaluation_trace_id AS judge_trace, rules_version AS rules "
        f"FROM {db}.scores_current {this}ORDER BY rule, span_id, request_index"
    )
    _print(console, "Current scores", scores.columns, scores.rows)
    return True


def _is_judge_trace(reader: Reader, trace_id: str) -> bool:
    project = reader.query(f"SELECT project FROM {reader.database}.traces FINAL "
                           f"{where(Eq('trace_id', trace_id))}LIMIT 1")
    return bool(project.rows) and project.rows[0][0] == JUDGE_PROJECT


def assembly_lines(rows: list[list]) -> list[str]:
    """What each version waited for before it closed, and what re-opened it, in words."""
    lines = []
    for version, waited_json, reopened_json in rows:
        if reopened_json:
            late = json.loads(reopened_json)
            lines.append(f"  v{version} re-opened by span {late['span_id']} ({late.get('name') or '?'}), "
                         f"{late.get('late_by_s', 0):g} s after the previous version closed")
        for call in json.loads(waited_json) if waited_json else []:
            outcome = (f"answered after {call['waited_s']:g} s" if call["answered"]
                       else f"no answer from the callee within {call['waited_s']:g} s")
            lines.append(f"  v{version} waited for remote call {call['span_id']} ({call.get('name') or '?'}): "
                         f"{outcome}")
    return lines


FREE_TEXT = frozenset({"reason", "error_type", "error_message", "waited_for", "reopened_by", "name"})


def _print(console: Console, title: str, columns: list[str], rows: list[list]) -> None:
    """Nothing cut: free text folds in its cell; too wide for a terminal, one block per row (`views/tables.py`)."""
    print_table(console, columns, [["" if v is None else str(v) for v in row] for row in rows],
                fold=[c for c in columns if c in FREE_TEXT], title=title)
    if not rows:
        console.print("  (none)")
