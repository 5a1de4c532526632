"""The SQL that feeds rule health (`rules/health.py`): per rule, over [since, now), what was decided and what
came out, from `decisions` + `session_decisions` and `scores` + `session_scores`.

Two reads, both grouped by rule. Decisions are first grouped per subject (rule, trace version, span request;
a session version for session rules), so a subject's routing decision and its result's decision are one
subject: queued without scored/failed is a job still waiting. Raw tables, no FINAL: a row stored twice
(at-least-once) only repeats a subject or a job id, and both are counted once.
"""

from __future__ import annotations

from typing import Any

from pipeline.rules.health import RECENT_WINDOW_S, RuleFigures
from pipeline.storage.reader import QueryResult, Reader

__all__ = ["aread_figures", "decisions_sql", "figures_from", "read_figures", "scores_sql"]


def _at(epoch_s: float) -> str:
    return f"toDateTime64({float(epoch_s):.6f}, 6)"


def _secs(expr: str) -> str:
    return f"toUnixTimestamp64Micro({expr}) / 1e6"


def decisions_sql(db: str, since: float, now: float) -> str:
    recent = _at(now - RECENT_WINDOW_S)
    subjects = (
        f"SELECT rule, trace_id AS subject, trace_version AS version, span_id, request_index, outcome, decided_at "
        f"FROM {db}.decisions WHERE decided_at >= {_at(since)} "
        f"UNION ALL SELECT rule, session_id, session_version, '', 0, outcome, decided_at "
        f"FROM {db}.session_decisions WHERE decided_at >= {_at(since)}")
    per_subject = (  # is_*: ClickHouse lets an alias of the outer SELECT shadow a column of the same name
        "SELECT rule, max(outcome = 'filtered_out') AS is_filtered, max(outcome != 'filtered_out') AS is_matched, "
        "max(outcome = 'queued') AS is_queued, max(outcome = 'deferred') AS is_deferred, "
        "max(outcome IN ('scored', 'failed')) AS is_done, max(outcome = 'failed') AS is_failed, "
        "minIf(decided_at, outcome = 'queued') AS queued_at, max(decided_at) AS last_at "
        f"FROM ({subjects}) GROUP BY rule, subject, version, span_id, request_index")
    waiting = "is_queued AND NOT is_done AND NOT is_deferred"
    return (
        "SELECT rule, countIf(is_filtered AND NOT is_matched) AS filtered_out, countIf(is_matched) AS matched, "
        "countIf(is_queued) AS sampled, countIf(is_deferred) AS deferred, countIf(is_failed) AS failed_decisions, "
        f"countIf({waiting}) AS waiting, countIf(is_deferred AND NOT is_done) AS deferred_waiting, "
        f"{_secs(f'minIf(queued_at, {waiting})')} AS oldest_waiting_at, "
        f"{_secs('maxIf(last_at, is_matched)')} AS last_decision_at, "
        f"countIf(is_queued AND queued_at >= {recent}) AS recent_queued "
        f"FROM ({per_subject}) GROUP BY rule")


def scores_sql(db: str, since: float, now: float) -> str:
    recent = _at(now - RECENT_WINDOW_S)
    last_score = _secs("maxIf(scored_at, status = 'scored')")
    columns = "rule, job_id, status, passed, scored_at, error_type, error_message"
    results = (f"SELECT {columns} FROM {db}.scores WHERE scored_at >= {_at(since)} "
               f"UNION ALL SELECT {columns} FROM {db}.session_scores WHERE scored_at >= {_at(since)}")
    return (
        "SELECT rule, uniqExactIf(job_id, status = 'scored') AS scored, "
        "uniqExactIf(job_id, status = 'scored' AND NOT ifNull(passed, true)) AS failed, "
        "uniqExactIf(job_id, status = 'error') AS errored, "
        f"{_secs('max(scored_at)')} AS last_result_at, {last_score} AS last_score_at, "
        "argMax(toUInt8(status = 'error'), scored_at) AS last_result_was_error, "
        f"uniqExactIf(job_id, scored_at >= {recent}) AS recent_results, "
        f"uniqExactIf(job_id, scored_at >= {recent} AND status = 'error') AS recent_errors, "
        "argMaxIf(error_type, scored_at, status = 'error') AS last_error_type, "
        "substring(argMaxIf(error_message, scored_at, status = 'error'), 1, 300) AS last_error_message "
        f"FROM ({results}) GROUP BY rule")


def _time(value: Any) -> float | None:
    value = float(value or 0)
    return value if value > 0 else None  # an empty minIf / maxIf is the epoch


def figures_from(decisions: QueryResult, scores: QueryResult) -> dict[str, RuleFigures]:
    """Both reads' rows -> figures per rule."""
    merged: dict[str, dict[str, Any]] = {}
    for result in (decisions, scores):
        for row in result.rows:
            merged.setdefault(str(row[0]), {}).update(zip(result.columns[1:], row[1:], strict=True))
    out = {}
    for rule, m in merged.items():
        out[rule] = RuleFigures(
            rule=rule, filtered_out=int(m.get("filtered_out", 0)), matched=int(m.get("matched", 0)),
            sampled=int(m.get("sampled", 0)), scored=int(m.get("scored", 0)), failed=int(m.get("failed", 0)),
            errored=max(int(m.get("errored", 0)), int(m.get("failed_decisions", 0))),
            deferred=int(m.get("deferred", 0)), waiting=int(m.get("waiting", 0)),
            deferred_waiting=int(m.get("deferred_waiting", 0)),
            oldest_waiting_at=_time(m.get("oldest_waiting_at")), last_decision_at=_time(m.get("last_decision_at")),
            last_result_at=_time(m.get("last_result_at")), last_score_at=_time(m.get("last_score_at")),
            last_result_was_error=bool(int(m.get("last_result_was_error", 0))),
            recent_results=int(m.get("recent_results", 0)), recent_errors=int(m.get("recent_errors", 0)),
            recent_queued=int(m.get("recent_queued", 0)), last_error_type=str(m.get("last_error_type") or ""),
            last_error_message=str(m.get("last_error_message") or ""))
    return out


def read_figures(reader: Reader, since: float, now: float) -> dict[str, RuleFigures]:
    """A command's read (StorageError when storage does not answer)."""
    return figures_from(reader.query(decisions_sql(reader.database, since, now)),
                        reader.query(scores_sql(reader.database, since, now)))


async def aread_figures(reader: Reader, since: float, now: float) -> dict[str, RuleFigures]:
    """A worker's read, off its event loop."""
    return figures_from(await reader.aquery(decisions_sql(reader.database, since, now)),
                        await reader.aquery(scores_sql(reader.database, since, now)))
