"""Contract models -> ClickHouse rows. Pure: the sink only batches and inserts what these return.

Times are integer ticks (microseconds for DateTime64(6)); JSON columns are compact strings.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.contracts import (
    Alert,
    DeadLetter,
    Decision,
    ScoreResult,
    Session,
    SessionDecision,
    Span,
    Trace,
    WorkerMetrics,
    result_decision,
)
from pipeline.contracts.bounds import UINT32_MAX
from pipeline.contracts.uploads import UploadedScorer
from pipeline.errors import DecodeError

TRACE_COLUMNS = [
    "trace_id", "version", "project", "status", "close_reason", "root_span_id", "name", "start_time",
    "end_time", "duration_ms", "span_count", "error_count", "agents", "total_tokens", "cost_usd", "closed_at",
    "waited_for", "reopened_by", "late_by_s",
]
SPAN_COLUMNS = [
    "trace_id", "span_id", "trace_version", "parent_span_id", "project", "service", "name", "span_type", "kind",
    "start_time", "end_time", "duration_ms", "status", "error_type", "error_message", "agent_name", "agent_id",
    "session_id", "model", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "attributes", "inputs",
    "outputs",
]
SCORE_COLUMNS = [
    "job_id", "rule", "scorer", "scorer_version", "trace_id", "trace_version", "span_id", "request_index",
    "span_name", "project", "agent_name", "model", "status", "value", "label", "passed", "threshold", "reason",
    "criteria", "metadata", "error_type", "error_message", "attempts", "latency_ms", "source", "scored_at",
    "evaluation_trace_id", "rules_version",
]
DECISION_COLUMNS = [
    "rule", "trace_id", "trace_version", "span_id", "request_index", "outcome", "reason", "job_id", "project",
    "source", "decided_at", "rules_version",
]
ALERT_COLUMNS = [
    "alert_id", "incident_id", "alert_rule", "kind", "level", "rule", "scorer", "project", "group_values", "title",
    "text", "measure", "observed", "threshold", "failures", "samples", "suppressed", "window_s", "window_start",
    "incident_started", "trace_ids", "fired_at", "channel", "thread_ts", "delivery_status", "delivery_error",
    "delivery_attempts",
]
ALERT_DELIVERY_COLUMNS = [
    "attempt_id", "alert_id", "incident_id", "alert_rule", "kind", "channel", "at", "ok", "http_status", "error",
    "retry_after_s",
]
DEAD_LETTER_COLUMNS = [
    "stage", "source_topic", "partition", "offset", "job_id", "item", "key", "trace_id", "error_type", "reason",
    "payload_size", "payload_excerpt", "at",
]
SCORER_VERSION_COLUMNS = [
    "name", "version", "entry", "kind", "filename", "requirements", "source", "uploaded_by", "uploaded_at",
]
CONSUMER_LAG_COLUMNS = [
    "at", "worker", "consumer_group", "topic", "partition", "lag_records", "lag_seconds",
]
SESSION_COLUMNS = [
    "session_id", "version", "revision", "project", "status", "close_reason", "started", "ended", "duration_ms",
    "turn_count", "error_count", "cost_usd", "trace_ids", "agents", "finished_rules", "closed_at", "updated_at",
]
SESSION_TURN_COLUMNS = [
    "session_id", "session_version", "turn", "revision", "trace_id", "trace_version", "project", "name", "started",
    "ended", "status", "agents", "input", "output", "errors", "cost_usd", "ends_session",
]
SESSION_SCORE_COLUMNS = ["session_id", "session_version", "turn", "final", *SCORE_COLUMNS]
SESSION_DECISION_COLUMNS = [
    "rule", "session_id", "session_version", "outcome", "reason", "job_id", "project", "turns", "source",
    "decided_at", "rules_version",
]


def _us(ns: int) -> int:
    return ns // 1000


def _json(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def trace_row(trace: Trace) -> list[Any]:
    agents = sorted({s.agent_name for s in trace.spans if s.agent_name})
    tokens = sum(s.total_tokens or (s.input_tokens or 0) + (s.output_tokens or 0) for s in trace.spans)
    return [
        trace.trace_id, trace.version, trace.project, trace.status.value, trace.close_reason.value,
        trace.root_span_id or "", trace.name or "", _us(trace.start_ns), _us(trace.end_ns), trace.duration_ms,
        len(trace.spans), sum(1 for s in trace.spans if s.status == "error"), agents, tokens, trace.cost_usd,
        _us(trace.closed_at_ns), _json([w.model_dump(mode="json") for w in trace.waited_for] or None),
        _json(trace.reopened_by.model_dump(mode="json") if trace.reopened_by else None),
        trace.reopened_by.late_by_s if trace.reopened_by else None,
    ]


def span_row(span: Span, trace_version: int) -> list[Any]:
    err = span.error
    return [
        span.trace_id, span.span_id, trace_version, span.parent_span_id or "", span.project, span.service or "",
        span.name, span.span_type, span.kind.value if span.kind else "", _us(span.start_ns), _us(span.end_ns), span.duration_ms, span.status.value,
        err.type if err else "", err.message if err else "", span.agent_name or "", span.agent_id or "",
        span.session_id or "", span.model or "", span.input_tokens, span.output_tokens, span.total_tokens,
        span.cost_usd, _json(span.attributes), _json(span.inputs), _json(span.outputs),
    ]


def trusted_trace_rows(traces: Any) -> tuple[list[list[Any]], list[list[Any]]]:
    """The `traces` list of a TraceBatch as the assembler wrote it (JSON, loaded) -> its trace rows and span rows,
    the same rows `trace_row` and `span_row` give for the validated models, without building them.

    Only for `traces.v2`, which only the assembler writes, from spans it validated at the edge (a SpanBatch's
    every field bounded by its column) and dumped with `exclude_none`: revalidating them here cost as much as
    the rest of the sink's work per trace. It is still safe with a record that is not what the assembler
    writes: anything not shaped as a trace (a missing key, a wrong type where the row computes with it) raises
    DecodeError, which the sink dead-letters as it does a record that fails validation; a value of the wrong
    type in a column that is only copied is refused by ClickHouse, and the sink dead-letters that row alone
    (`ClickHouseSink._split`)."""
    if not isinstance(traces, list):
        raise DecodeError(f"expected a list in 'traces', got {type(traces).__name__}")
    trace_rows: list[list[Any]] = []
    span_rows: list[list[Any]] = []
    for index, trace in enumerate(traces):
        try:
            trace_rows.append(_trusted_trace_row(trace, span_rows))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DecodeError(f"traces[{index}] is not a trace as the assembler writes it: "
                              f"{type(exc).__name__}: {exc}") from None
    return trace_rows, span_rows


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _trusted_trace_row(trace: dict[str, Any], span_rows: list[list[Any]]) -> list[Any]:
    if trace.get("v", 1) != 1:
        raise ValueError(f"trace contract version {trace.get('v')!r}")
    version = _int(trace["version"])
    spans = trace.get("spans", [])
    if not isinstance(spans, list):
        raise TypeError("spans is not a list")
    agents: set[str] = set()
    tokens = errors = 0
    cost = 0.0
    for span in spans:
        start, end = _int(span["start_ns"]), _int(span["end_ns"])
        total, tokens_in, tokens_out = span.get("total_tokens"), span.get("input_tokens"), span.get("output_tokens")
        span_cost = span.get("cost_usd")
        status = span.get("status", "unset")
        agent = span.get("agent_name")
        err = span.get("error")
        kind = span.get("kind")
        span_rows.append([
            _str(span["trace_id"]), _str(span["span_id"]), version, span.get("parent_span_id") or "",
            span.get("project", "default"), span.get("service") or "", _str(span["name"]),
            span.get("span_type", "function"), kind or "", start // 1000, end // 1000, max(0, end - start) / 1e6,
            status, err["type"] if err else "", err.get("message", "") if err else "", agent or "",
            span.get("agent_id") or "", span.get("session_id") or "", span.get("model") or "", tokens_in,
            tokens_out, total, None if span_cost is None else float(span_cost), _json(span.get("attributes", {})),
            _json(span.get("inputs")), _json(span.get("outputs")),
        ])
        if agent:
            agents.add(agent)
        tokens += total or (tokens_in or 0) + (tokens_out or 0)
        cost += span_cost or 0.0
        errors += status == "error"
    start, end = _int(trace.get("start_ns", 0)), _int(trace.get("end_ns", 0))
    waited = trace.get("waited_for") or []
    late = trace.get("reopened_by")
    return [
        _str(trace["trace_id"]), version, trace.get("project", "default"), _str(trace["status"]),
        _str(trace["close_reason"]), trace.get("root_span_id") or "", trace.get("name") or "", start // 1000,
        end // 1000, max(0, end - start) / 1e6, len(spans), errors, sorted(agents), tokens, cost,
        _int(trace.get("closed_at_ns", 0)) // 1000,
        _json([{"span_id": w["span_id"], "name": w.get("name", ""), "answered": w["answered"],
                "waited_s": float(w.get("waited_s", 0.0))} for w in waited] or None),
        _json({"span_id": late["span_id"], "name": late.get("name", ""), "late_by_s": float(late.get("late_by_s", 0.0))}
              if late else None),
        float(late.get("late_by_s", 0.0)) if late else None,
    ]


def score_row(result: ScoreResult) -> list[Any]:
    value = result.value
    numeric = float(value) if isinstance(value, bool | int | float) else None
    label = value if isinstance(value, str) else ""
    return [
        result.job_id, result.rule, result.scorer, result.scorer_version, result.trace_id, result.trace_version,
        result.span_id or "", result.request_index, result.span_name or "", result.project, result.agent_name or "", result.model or "",
        result.status.value, numeric, label, result.passed, result.threshold, result.reason,
        _json([c.model_dump(mode="json") for c in result.criteria]), _json(result.metadata),
        result.error_type or "", result.error_message or "", result.attempts, result.latency_ms,
        result.source.value, _us(result.scored_at_ns), result.evaluation_trace_id or "", result.rules_version,
    ]


def decision_row(decision: Decision) -> list[Any]:
    return [
        decision.rule, decision.trace_id, decision.trace_version, decision.span_id or "", decision.request_index,
        decision.outcome.value, decision.reason, decision.job_id or "", decision.project, decision.source.value,
        _us(decision.decided_at_ns), decision.rules_version,
    ]


def alert_row(alert: Alert) -> list[Any]:
    return [
        alert.alert_id, alert.incident_id, alert.alert_rule, alert.kind.value, alert.level.value if alert.level else "",
        alert.rule or "", alert.scorer or "", alert.project or "", alert.group, alert.title, alert.text,
        alert.measure, alert.observed, alert.threshold, alert.failures, alert.samples, alert.suppressed,
        alert.window_s, _us(alert.window_start_ns) if alert.window_start_ns is not None else None,
        _us(alert.incident_started_ns) if alert.incident_started_ns is not None else None, alert.trace_ids,
        _us(alert.fired_at_ns), alert.channel, ",".join(f"{k}={v}" for k, v in sorted(alert.thread.items())),
        alert.delivery_status.value, alert.delivery_error or "", alert.delivery_attempts,
    ]


def alert_delivery_rows(alert: Alert) -> list[list[Any]]:
    return [
        [a.attempt_id, alert.alert_id, alert.incident_id, alert.alert_rule, alert.kind.value, a.channel,
         _us(a.at_ns), a.ok, a.http_status, a.error or "", a.retry_after_s]
        for a in alert.attempts
    ]


def dead_letter_row(dl: DeadLetter) -> list[Any]:
    return [
        dl.stage, dl.source_topic, dl.partition, dl.offset, dl.job_id or "", dl.item or dl.trace_id or "",
        dl.key or "", dl.trace_id or "",
        dl.error_type, dl.reason, dl.payload_size, dl.payload_excerpt, _us(dl.at_ns),
    ]


def scorer_version_row(upload: UploadedScorer) -> list[Any]:
    return [
        upload.name, upload.version, upload.entry, upload.kind, upload.filename, upload.requirements, upload.source,
        upload.uploaded_by, _us(upload.uploaded_at_ns),
    ]


def consumer_lag_rows(metrics: WorkerMetrics) -> list[list[Any]]:
    at = _us(metrics.at_ns)
    return [[at, metrics.worker, lag.consumer_group, lag.topic, lag.partition, lag.lag_records, lag.lag_seconds]
            for lag in metrics.lag]


def session_revision(session: Session) -> int:
    """Which row of a (session_id, version) stays: 2 x turns, + 1 once closed. A closed version beats
    its open snapshots, a snapshot with more turns an earlier one; no worker's clock is involved."""
    return 2 * len(session.turns) + (0 if session.is_open else 1)


def session_row(session: Session) -> list[Any]:
    agents: list[str] = []
    for turn in session.turns:
        agents += [a for a in turn.agents if a not in agents]
    return [
        session.session_id, session.version, session_revision(session), session.project, session.status.value,
        session.close_reason.value if session.close_reason else "", _us(session.started_ns), _us(session.ended_ns),
        session.duration_ms, len(session.turns), min(sum(t.errors for t in session.turns), UINT32_MAX), session.cost_usd,
        session.trace_ids, agents, session.finished_rules,
        None if session.is_open else _us(session.closed_at_ns), _us(session.closed_at_ns),
    ]


def session_turn_rows(session: Session) -> list[list[Any]]:
    revision = session_revision(session)
    return [
        [session.session_id, session.version, n, revision, t.trace_id, t.trace_version, t.project, t.name or "",
         _us(t.started_ns), _us(t.ended_ns), t.status.value, t.agents, t.input, t.output, t.errors, t.cost_usd,
         t.ends_session]
        for n, t in enumerate(session.turns, start=1)
    ]


def session_score_row(result: ScoreResult) -> list[Any]:
    """A session rule's result (`result.session_id` set): the score row with the session in front."""
    if result.session_id is None:
        raise ValueError(f"result {result.job_id} of rule {result.rule} is not a session's")
    return [result.session_id, result.session_version or 0, result.turn or 0, bool(result.final),
            *score_row(result)]


def session_decision_row(decision: SessionDecision) -> list[Any]:
    return [
        decision.rule, decision.session_id, decision.session_version, decision.outcome.value, decision.reason,
        decision.job_id or "", decision.project, decision.turns, decision.source.value, _us(decision.decided_at_ns),
        decision.rules_version,
    ]


def result_rows(results: list[ScoreResult]) -> dict[str, list[list[Any]]]:
    """A ScoreResultBatch's rows: each result's score (a session rule's in session_scores) and the decision it
    implies (`contracts.result_decision`: scored or failed; a session rule's closing verdicts only).

    The scorers send no decisions of their own for results. A result written by an older scorer that also sent
    its decision on the decisions topic gives that decision twice with the same key (rule, trace or session,
    version, outcome, span, request): decisions and session_decisions are ReplacingMergeTree on that key, so
    the second replaces the first and the `*_current` views see one.
    """
    out: dict[str, list[list[Any]]] = {"scores": [], "session_scores": [], "decisions": [], "session_decisions": []}
    for result in results:
        if result.is_session:
            out["session_scores"].append(session_score_row(result))
        else:
            out["scores"].append(score_row(result))
        decision = result_decision(result)
        if isinstance(decision, SessionDecision):
            out["session_decisions"].append(session_decision_row(decision))
        elif decision is not None:
            out["decisions"].append(decision_row(decision))
    return out
