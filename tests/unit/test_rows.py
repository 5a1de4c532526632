"""pipeline/storage/rows.py: contract models -> ClickHouse rows (pure)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline import topics
from pipeline.contracts import (
    Alert,
    ConsumerLag,
    CriterionVerdict,
    DeadLetter,
    Decision,
    DeliveryAttempt,
    ErrorInfo,
    ScoreResult,
    Span,
    Trace,
    WorkerMetrics,
    encode,
)
from pipeline.storage import rows
from pipeline.storage.rows import (
    ALERT_COLUMNS,
    ALERT_DELIVERY_COLUMNS,
    CONSUMER_LAG_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DECISION_COLUMNS,
    SCORE_COLUMNS,
    SPAN_COLUMNS,
    TRACE_COLUMNS,
)
from pipeline.storage.sink import rows_for

MIGRATIONS = sorted((Path(rows.__file__).parent / "migrations").glob("*.sql"))


def ddl_columns(table: str) -> list[str]:
    """The table's columns after every migration in order: CREATE TABLE, then ALTER ... ADD COLUMN ... AFTER."""
    names: list[str] = []
    for path in MIGRATIONS:
        ddl = path.read_text()
        created = re.search(r"CREATE TABLE IF NOT EXISTS \{db\}\." + table + r" \((.*?)\n\) ENGINE", ddl, re.DOTALL)
        if created:
            names = [line.strip().split()[0] for line in created.group(1).strip().splitlines()]
        for name, after in re.findall(r"ALTER TABLE \{db\}\." + table +
                                      r" ADD COLUMN IF NOT EXISTS (\w+) .*? AFTER (\w+);", ddl):
            names.insert(names.index(after) + 1, name)
    return [n for n in names if n != "ingested_at"]


@pytest.mark.parametrize("table, columns", [
    ("traces", TRACE_COLUMNS), ("spans", SPAN_COLUMNS), ("scores", SCORE_COLUMNS),
    ("decisions", DECISION_COLUMNS), ("alerts", ALERT_COLUMNS), ("dead_letters", DEAD_LETTER_COLUMNS),
    ("consumer_lag", CONSUMER_LAG_COLUMNS),
])
def test_column_lists_match_the_schema(table: str, columns: list[str]) -> None:
    assert columns == ddl_columns(table)


def as_dict(columns: list[str], row: list[Any]) -> dict[str, Any]:
    assert len(row) == len(columns)
    return dict(zip(columns, row, strict=True))


def _span(span_id: str, **kw: Any) -> Span:
    return Span(trace_id="t", span_id=span_id, name=kw.pop("name", "op"), start_ns=kw.pop("start_ns", 1_500_000),
                end_ns=kw.pop("end_ns", 4_500_000), **kw)


FULL_SPAN = _span("s1", parent_span_id="root", service="api", span_type="llm", status="error",
                  error=ErrorInfo(type="RateLimit", message="429"), agent_name="planner", agent_id="a1",
                  session_id="sess", model="m", input_tokens=10, output_tokens=5, total_tokens=15, cost_usd=0.25,
                  attributes={"k": "v"}, inputs={"q": "hi"}, outputs="plain text")


def test_trace_row() -> None:
    trace = Trace(trace_id="t", version=3, project="bot", status="incomplete", close_reason="idle_timeout",
                  start_ns=1_000_000, end_ns=251_000_000, closed_at_ns=9_000_999, spans=[
                      _span("a", agent_name="zeta", input_tokens=3, output_tokens=4),
                      _span("b", agent_name="alpha", total_tokens=100, input_tokens=1),
                      _span("c", agent_name="zeta", status="error", cost_usd=0.5),
                      _span("d", status="error", cost_usd=0.25),
                  ])
    row = as_dict(TRACE_COLUMNS, rows.trace_row(trace))
    assert row["trace_id"] == "t" and row["version"] == 3 and row["project"] == "bot"
    assert row["status"] == "incomplete" and row["close_reason"] == "idle_timeout"
    assert row["root_span_id"] == "" and row["name"] == ""  # None -> empty string
    assert row["start_time"] == 1_000 and row["end_time"] == 251_000 and row["closed_at"] == 9_000  # microseconds
    assert row["duration_ms"] == 250.0
    assert row["span_count"] == 4 and row["error_count"] == 2
    assert row["agents"] == ["alpha", "zeta"]
    assert row["total_tokens"] == 7 + 100  # total if given, else input + output
    assert row["cost_usd"] == 0.75


def test_span_row_full() -> None:
    row = as_dict(SPAN_COLUMNS, rows.span_row(FULL_SPAN, trace_version=2))
    assert row["trace_version"] == 2 and row["parent_span_id"] == "root" and row["service"] == "api"
    assert row["start_time"] == 1_500 and row["end_time"] == 4_500 and row["duration_ms"] == 3.0
    assert row["status"] == "error" and row["error_type"] == "RateLimit" and row["error_message"] == "429"
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"], row["cost_usd"]) == (10, 5, 15, 0.25)
    assert orjson.loads(row["attributes"]) == {"k": "v"}
    assert orjson.loads(row["inputs"]) == {"q": "hi"}
    assert row["outputs"] == "plain text"  # strings are stored as they are


def test_span_row_none_handling() -> None:
    row = as_dict(SPAN_COLUMNS, rows.span_row(_span("root"), trace_version=1))
    for col in ("parent_span_id", "service", "error_type", "error_message", "agent_name", "agent_id",
                "session_id", "model", "inputs", "outputs"):
        assert row[col] == "", col  # String columns get "" rather than None
    for col in ("input_tokens", "output_tokens", "total_tokens", "cost_usd"):
        assert row[col] is None, col  # Nullable columns keep None
    assert row["attributes"] == "{}" and row["status"] == "unset"


def test_span_row_serialises_non_json_values() -> None:
    row = as_dict(SPAN_COLUMNS, rows.span_row(_span("x", inputs={"when": object}), trace_version=1))
    assert "object" in orjson.loads(row["inputs"])["when"]


def _result(**kw: Any) -> ScoreResult:
    base = {"job_id": "j", "rule": "r", "scorer": "s", "trace_id": "t", "trace_version": 1, "status": "scored",
            "scored_at_ns": 5_000_000_123}
    return ScoreResult(**{**base, **kw})


@pytest.mark.parametrize("value, numeric, label", [
    (True, 1.0, ""), (False, 0.0, ""), (0.75, 0.75, ""), (3, 3.0, ""), ("toxic", None, "toxic"), (None, None, ""),
])
def test_score_row_value_and_label(value: Any, numeric: float | None, label: str) -> None:
    row = as_dict(SCORE_COLUMNS, rows.score_row(_result(value=value)))
    assert row["value"] == numeric and type(row["value"]) is type(numeric)
    assert row["label"] == label


def test_score_row_fields_and_none_handling() -> None:
    row = as_dict(SCORE_COLUMNS, rows.score_row(_result()))
    assert row["span_id"] == "" and row["agent_name"] == "" and row["model"] == ""
    assert row["error_type"] == "" and row["error_message"] == ""
    assert row["passed"] is None and row["threshold"] is None  # Nullable
    assert row["criteria"] == "[]" and row["metadata"] == "{}"
    assert row["status"] == "scored" and row["source"] == "live" and row["scored_at"] == 5_000_000

    full = _result(status="error", passed=False, threshold=0.5, span_id="s", agent_name="a", model="m",
                   error_type="ValueError", error_message="boom", attempts=3,
                   criteria=[CriterionVerdict(criterion="polite", verdict="false", reason="rude")],
                   metadata={"tokens": 12})
    row = as_dict(SCORE_COLUMNS, rows.score_row(full))
    assert row["passed"] is False and row["threshold"] == 0.5 and row["attempts"] == 3
    assert row["status"] == "error" and row["error_type"] == "ValueError"
    assert orjson.loads(row["criteria"]) == [{"criterion": "polite", "verdict": "false", "reason": "rude"}]
    assert orjson.loads(row["metadata"]) == {"tokens": 12}


def test_decision_row() -> None:
    d = Decision(rule="r", trace_id="t", trace_version=2, outcome="sampled_out", reason="sampling_rate=0.1",
                 decided_at_ns=7_000_000)
    row = as_dict(DECISION_COLUMNS, rows.decision_row(d))
    assert row == {"rule": "r", "trace_id": "t", "trace_version": 2, "outcome": "sampled_out",
                   "reason": "sampling_rate=0.1", "job_id": "", "project": "default", "source": "live",
                   "decided_at": 7_000}


def test_alert_row() -> None:
    a = Alert(alert_id="al", incident_id="inc", alert_rule="burst", kind="firing", level="critical", title="t",
              text="x", failures=3, window_s=60, window_start_ns=60_000_000_000, group={"agent": "planner"},
              observed=3, threshold=3, trace_ids=["a", "b"], fired_at_ns=2_000_000, delivery_status="failed",
              delivery_error="503", delivery_attempts=2, thread={"slack-bot": "17.1"})
    row = as_dict(ALERT_COLUMNS, rows.alert_row(a))
    assert row["rule"] == "" and row["scorer"] == "" and row["project"] == ""
    assert (row["kind"], row["level"], row["incident_id"], row["group_values"]) == (
        "firing", "critical", "inc", {"agent": "planner"})
    assert row["trace_ids"] == ["a", "b"] and row["fired_at"] == 2_000 and row["window_s"] == 60
    assert row["window_start"] == 60_000_000 and row["observed"] == 3 and row["thread_ts"] == "slack-bot=17.1"
    assert row["delivery_status"] == "failed" and row["delivery_error"] == "503" and row["delivery_attempts"] == 2
    digest = Alert(alert_id="b", alert_rule="each", kind="digest", title="t", text="x", fired_at_ns=0, suppressed=4)
    row = as_dict(ALERT_COLUMNS, rows.alert_row(digest))
    assert row["window_s"] is None and row["delivery_error"] == "" and row["channel"] == "console"
    assert row["level"] == "" and row["suppressed"] == 4


def test_every_delivery_attempt_is_a_row() -> None:
    a = Alert(alert_id="al", incident_id="inc", alert_rule="burst", kind="resolved", title="t", text="x",
              fired_at_ns=0, attempts=[
                  DeliveryAttempt(attempt_id="1", channel="slack-webhook", at_ns=5_000, ok=False, http_status=429,
                                  error="rate_limited", retry_after_s=1),
                  DeliveryAttempt(attempt_id="2", channel="slack-webhook", at_ns=9_000, ok=True, http_status=200)])
    got = [as_dict(ALERT_DELIVERY_COLUMNS, r) for r in rows.alert_delivery_rows(a)]
    assert [(r["attempt_id"], r["ok"], r["http_status"], r["retry_after_s"], r["at"]) for r in got] == [
        ("1", False, 429, 1, 5), ("2", True, 200, None, 9)]
    assert {r["kind"] for r in got} == {"resolved"} and {r["incident_id"] for r in got} == {"inc"}


def test_dead_letter_row() -> None:
    dl = DeadLetter(stage="assembler", source_topic="evalstream.spans.v1", partition=2, offset=41,
                    error_type="DecodeError", reason="not valid JSON", payload_size=9, payload_excerpt="garbage",
                    at_ns=3_000_000)
    row = as_dict(DEAD_LETTER_COLUMNS, rows.dead_letter_row(dl))
    assert row["job_id"] == "" and row["key"] == "" and row["trace_id"] == ""
    assert (row["partition"], row["offset"], row["payload_size"], row["at"]) == (2, 41, 9, 3_000)
    assert row["stage"] == "assembler" and row["error_type"] == "DecodeError"


def test_consumer_lag_rows_one_per_partition_and_the_sink_reads_them() -> None:
    sample = WorkerMetrics(worker="host:42", at_ns=7_000_001_000, lag=[
        ConsumerLag(consumer_group="evalstream", topic="evalstream.jobs.v1", partition=3, lag_records=12,
                    lag_seconds=1.5),
        ConsumerLag(consumer_group="evalstream-sink", topic="evalstream.traces.v1", partition=0, lag_records=0,
                    lag_seconds=0.0),
    ])
    got = [as_dict(CONSUMER_LAG_COLUMNS, r) for r in rows.consumer_lag_rows(sample)]
    assert got[0] == {"at": 7_000_001, "worker": "host:42", "consumer_group": "evalstream",
                      "topic": "evalstream.jobs.v1", "partition": 3, "lag_records": 12, "lag_seconds": 1.5}
    assert got[1]["consumer_group"] == "evalstream-sink" and got[1]["lag_records"] == 0
    assert rows_for(topics.METRICS, encode(sample), 1 << 20) == {"consumer_lag": rows.consumer_lag_rows(sample)}
