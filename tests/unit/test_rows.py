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
    DecisionBatch,
    DeliveryAttempt,
    ErrorInfo,
    ScoreResult,
    ScoreResultBatch,
    Session,
    SessionDecision,
    Span,
    Trace,
    Turn,
    WorkerMetrics,
    encode,
    result_decision,
)
from pipeline.storage import rows
from pipeline.storage.rows import (
    ALERT_COLUMNS,
    ALERT_DELIVERY_COLUMNS,
    CONSUMER_LAG_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DECISION_COLUMNS,
    SCORE_COLUMNS,
    SESSION_COLUMNS,
    SESSION_DECISION_COLUMNS,
    SESSION_SCORE_COLUMNS,
    SESSION_TURN_COLUMNS,
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
        for alter in re.findall(r"ALTER TABLE \{db\}\." + table + r" (.*?);", ddl, re.DOTALL):
            for name, after in re.findall(r"ADD COLUMN IF NOT EXISTS (\w+) .*? AFTER (\w+)[,;]?", alter + ";"):
                names.insert(names.index(after) + 1, name)
    return [n for n in names if n != "ingested_at"]


@pytest.mark.parametrize("table, columns", [
    ("traces", TRACE_COLUMNS), ("spans", SPAN_COLUMNS), ("scores", SCORE_COLUMNS),
    ("decisions", DECISION_COLUMNS), ("alerts", ALERT_COLUMNS), ("dead_letters", DEAD_LETTER_COLUMNS),
    ("consumer_lag", CONSUMER_LAG_COLUMNS), ("sessions", SESSION_COLUMNS), ("session_turns", SESSION_TURN_COLUMNS),
    ("session_scores", SESSION_SCORE_COLUMNS), ("session_decisions", SESSION_DECISION_COLUMNS),
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
    assert row["evaluation_trace_id"] == ""  # no judge call, no evaluation trace
    assert row["rules_version"] == ""  # a result of a job routed before rules had versions

    full = _result(status="error", passed=False, threshold=0.5, span_id="s", agent_name="a", model="m",
                   error_type="ValueError", error_message="boom", attempts=3,
                   criteria=[CriterionVerdict(criterion="polite", verdict="false", reason="rude")],
                   metadata={"tokens": 12}, evaluation_trace_id="e" * 32)
    row = as_dict(SCORE_COLUMNS, rows.score_row(full))
    assert row["evaluation_trace_id"] == "e" * 32
    assert row["passed"] is False and row["threshold"] == 0.5 and row["attempts"] == 3
    assert row["status"] == "error" and row["error_type"] == "ValueError"
    assert orjson.loads(row["criteria"]) == [{"criterion": "polite", "verdict": "false", "reason": "rude"}]
    assert orjson.loads(row["metadata"]) == {"tokens": 12}


def test_decision_row() -> None:
    d = Decision(rule="r", trace_id="t", trace_version=2, outcome="sampled_out", reason="sampling_rate=0.1",
                 decided_at_ns=7_000_000)
    row = as_dict(DECISION_COLUMNS, rows.decision_row(d))
    assert row == {"rule": "r", "trace_id": "t", "trace_version": 2, "span_id": "", "request_index": 0,
                   "outcome": "sampled_out",
                   "reason": "sampling_rate=0.1", "job_id": "", "project": "default", "source": "live",
                   "decided_at": 7_000, "rules_version": ""}


def test_decisions_and_scores_record_the_rules_version_they_were_made_under() -> None:
    d = Decision(rule="r", trace_id="t", trace_version=1, outcome="queued", rules_version="0123456789ab")
    assert as_dict(DECISION_COLUMNS, rows.decision_row(d))["rules_version"] == "0123456789ab"
    result = _result(rules_version="0123456789ab")
    assert as_dict(SCORE_COLUMNS, rows.score_row(result))["rules_version"] == "0123456789ab"
    implied = result_decision(result)
    assert implied is not None and implied.rules_version == "0123456789ab"  # the scored decision keeps it


# What a result implies for its decision (issue 19: the scorers no longer send these; the sink derives them).
# The expected values are the fields ScorerWorker.handle and the session scorer used to set, with decided_at the
# time the result was produced instead of the time the scorer sent it.


def test_a_scored_result_implies_a_scored_decision_with_its_reason() -> None:
    result = _result(job_id="j1", rule="helpful", trace_id="t1", trace_version=3, project="shop", passed=True,
                     value=0.9, reason="answered the question", source="backfill")
    assert result_decision(result) == Decision(
        rule="helpful", trace_id="t1", trace_version=3, span_id=None, request_index=0, outcome="scored",
        reason="answered the question", job_id="j1", project="shop", source="backfill",
        decided_at_ns=5_000_000_123)


def test_a_failed_result_implies_a_failed_decision_naming_the_error_within_500_characters() -> None:
    failed = result_decision(_result(status="error", reason="ignored", error_type="TimeoutError",
                                     error_message="judge took 30 s", attempts=3))
    assert isinstance(failed, Decision)
    assert (failed.outcome, failed.reason, failed.job_id) == ("failed", "TimeoutError: judge took 30 s", "j")
    long = result_decision(_result(status="error", error_type="ValueError", error_message="x" * 600))
    assert long is not None and long.reason == ("ValueError: " + "x" * 600)[:500] and len(long.reason) == 500
    bare = result_decision(_result(status="error"))  # no error named: as the scorer wrote it
    assert bare is not None and bare.reason == "None: None"


def test_an_sdk_span_requests_result_is_decided_per_span_and_call() -> None:
    result = _result(rule="sdk:faithfulness", span_id="s7", request_index=2, job_id="req-2", reason="grounded")
    decision = result_decision(result)
    assert isinstance(decision, Decision)
    row = as_dict(DECISION_COLUMNS, rows.decision_row(decision))
    assert row == {"rule": "sdk:faithfulness", "trace_id": "t", "trace_version": 1, "span_id": "s7",
                   "request_index": 2, "outcome": "scored", "reason": "grounded", "job_id": "req-2",
                   "project": "default", "source": "live", "decided_at": 5_000_000, "rules_version": ""}


def test_a_session_rules_closing_verdict_implies_a_session_decision_and_a_look_none() -> None:
    session = {"session_id": "chat-1", "session_version": 2, "turn": 4, "trace_id": "t4", "project": "bot"}
    verdict = result_decision(_result(**session, final=True, job_id="close", passed=False, reason="never resolved"))
    assert verdict == SessionDecision(rule="r", session_id="chat-1", session_version=2, outcome="scored",
                                      reason="never resolved", job_id="close", project="bot", turns=4,
                                      source="live", decided_at_ns=5_000_000_123)
    errored = result_decision(_result(**session, final=True, status="error", error_type="RateLimit",
                                      error_message="429"))
    assert isinstance(errored, SessionDecision) and (errored.outcome, errored.reason) == ("failed", "RateLimit: 429")
    assert result_decision(_result(**session, final=False, passed=False)) is None  # a look while it runs
    assert result_decision(_result(**{**session, "turn": None, "session_version": None}, final=True)) == \
        SessionDecision(rule="r", session_id="chat-1", session_version=1, outcome="scored", job_id="j",
                        project="bot", turns=0, decided_at_ns=5_000_000_123)


def test_the_sink_stores_each_results_score_and_decision_from_one_scores_message() -> None:
    scored = _result(job_id="a", trace_id="t1", reason="fine")
    failed = _result(job_id="b", trace_id="t2", status="error", error_type="E", error_message="m")
    request = _result(job_id="c", trace_id="t1", rule="sdk:x", span_id="s1", request_index=1)
    look = _result(job_id="d", session_id="chat", session_version=1, turn=1, final=False)
    verdict = _result(job_id="e", session_id="chat", session_version=1, turn=2, final=True, reason="ok")
    stored = rows_for(topics.SCORES, encode(ScoreResultBatch(results=[scored, failed, request, look, verdict])),
                      1 << 20)
    assert set(stored) == {"scores", "session_scores", "decisions", "session_decisions"}
    assert [as_dict(SCORE_COLUMNS, r)["job_id"] for r in stored["scores"]] == ["a", "b", "c"]
    assert [as_dict(SESSION_SCORE_COLUMNS, r)["job_id"] for r in stored["session_scores"]] == ["d", "e"]
    decisions = [as_dict(DECISION_COLUMNS, r) for r in stored["decisions"]]
    assert [(d["job_id"], d["outcome"], d["reason"], d["span_id"], d["request_index"]) for d in decisions] == [
        ("a", "scored", "fine", "", 0), ("b", "failed", "E: m", "", 0), ("c", "scored", "", "s1", 1)]
    assert all(d["decided_at"] == 5_000_000 for d in decisions)
    sessions = [as_dict(SESSION_DECISION_COLUMNS, r) for r in stored["session_decisions"]]
    assert [(d["job_id"], d["session_id"], d["outcome"], d["turns"]) for d in sessions] == [("e", "chat", "scored", 2)]
    # A redelivered message gives the same rows, decided_at included: the tables replace them.
    assert rows_for(topics.SCORES, encode(ScoreResultBatch(results=[scored, failed, request, look, verdict])),
                    1 << 20) == stored


def test_an_older_scorers_own_decision_has_the_key_of_the_one_the_sink_derives() -> None:
    """Before issue 19 the scorer also sent each result's decision. Such a message, read beside its scores,
    gives a second row with the same ReplacingMergeTree key (trace_id, rule, trace_version, outcome, span_id,
    request_index), which replaces the first: one stored decision, not two."""
    result = _result(rule="sdk:x", span_id="s1", request_index=1, reason="fine")
    old = Decision(rule="sdk:x", trace_id="t", trace_version=1, span_id="s1", request_index=1, outcome="scored",
                   reason="fine", job_id="j", decided_at_ns=9_000_000_000)  # sent a little later
    derived = as_dict(DECISION_COLUMNS, rows_for(topics.SCORES, encode(ScoreResultBatch(results=[result])),
                                                 1 << 20)["decisions"][0])
    sent = as_dict(DECISION_COLUMNS, rows_for(topics.DECISIONS, encode(DecisionBatch(decisions=[old])),
                                              1 << 20)["decisions"][0])
    key = ("trace_id", "rule", "trace_version", "outcome", "span_id", "request_index")
    assert [derived[k] for k in key] == [sent[k] for k in key]
    assert {k: v for k, v in derived.items() if k != "decided_at"} == {
        k: v for k, v in sent.items() if k != "decided_at"}


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
    assert row["stage"] == "assembler" and row["error_type"] == "DecodeError" and row["item"] == ""
    in_bundle = as_dict(DEAD_LETTER_COLUMNS, rows.dead_letter_row(dl.model_copy(update={"item": "batches[3]"})))
    of_trace = as_dict(DEAD_LETTER_COLUMNS, rows.dead_letter_row(dl.model_copy(update={"trace_id": "t-9"})))
    assert (in_bundle["item"], of_trace["item"]) == ("batches[3]", "t-9")  # two failures of one message: two rows


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


# -- sessions ---------------------------------------------------------------------------------------------

def _turn(n: int, **kw: Any) -> Turn:
    base = {"session_id": "chat-1", "trace_id": f"t{n}", "project": "bot", "started_ns": n * 10**9,
            "ended_ns": n * 10**9 + 500_000_000, "input": f"question {n}", "output": f"answer {n}",
            "agents": ["support"], "cost_usd": 0.25}
    return Turn(**{**base, **kw})


def _session(turns: list[Turn], status: str = "complete", **kw: Any) -> Session:
    reason = None if status == "open" else kw.pop("close_reason", "idle_timeout")
    return Session(session_id="chat-1", version=kw.pop("version", 2), project="bot", status=status,
                   close_reason=reason, started_ns=turns[0].started_ns, ended_ns=turns[-1].ended_ns,
                   closed_at_ns=kw.pop("closed_at_ns", 90_000_000_000), turns=turns, **kw)


def test_session_row_sums_its_turns_and_a_closed_version_outranks_its_open_snapshots() -> None:
    turns = [_turn(1), _turn(2, errors=2, agents=["support", "billing"], cost_usd=None),
             _turn(3, status="incomplete", output="", ends_session=True)]
    closed = as_dict(SESSION_COLUMNS, rows.session_row(_session(turns, "incomplete", close_reason="end_marker")))
    assert (closed["session_id"], closed["version"], closed["status"], closed["close_reason"]) == (
        "chat-1", 2, "incomplete", "end_marker")
    assert closed["turn_count"] == 3 and closed["error_count"] == 2 and closed["cost_usd"] == 0.5
    assert closed["trace_ids"] == ["t1", "t2", "t3"] and closed["agents"] == ["support", "billing"]
    assert closed["started"] == 1_000_000 and closed["ended"] == 3_500_000 and closed["duration_ms"] == 2500.0
    assert closed["closed_at"] == closed["updated_at"] == 90_000_000

    snapshots = [as_dict(SESSION_COLUMNS, rows.session_row(_session(turns[:n], "open", closed_at_ns=n * 10**10,
                                                                    finished_rules=["goal"])))
                 for n in (1, 2, 3)]
    assert all(s["status"] == "open" and s["close_reason"] == "" and s["closed_at"] is None for s in snapshots)
    assert snapshots[2]["updated_at"] == 30_000_000 and snapshots[2]["finished_rules"] == ["goal"]
    # ReplacingMergeTree keeps the highest revision of (session_id, version): the closed version wins even
    # over a snapshot with the same turns taken later by a worker with a fast clock; a newer snapshot wins
    # over an older one, and a redelivered old snapshot never replaces anything.
    revisions = [s["revision"] for s in snapshots]
    assert revisions == sorted(revisions) and len(set(revisions)) == 3 and closed["revision"] > revisions[-1]


def test_session_turn_rows_are_numbered_in_turn_order_with_the_versions_revision() -> None:
    session = _session([_turn(1), _turn(2, name="refund", ends_session=True, cost_usd=None)])
    got = [as_dict(SESSION_TURN_COLUMNS, r) for r in rows.session_turn_rows(session)]
    assert [(r["turn"], r["trace_id"], r["session_version"]) for r in got] == [(1, "t1", 2), (2, "t2", 2)]
    assert got[0]["name"] == "" and got[1]["name"] == "refund"
    assert got[1]["input"] == "question 2" and got[1]["output"] == "answer 2" and got[1]["ends_session"] is True
    assert got[1]["cost_usd"] is None and got[0]["started"] == 1_000_000 and got[0]["status"] == "complete"
    assert {r["revision"] for r in got} == {rows.session_revision(session)}


def _session_result(**kw: Any) -> ScoreResult:
    return _result(**{"session_id": "chat-1", "session_version": 2, "turn": 3, "final": False, "trace_id": "t3",
                      **kw})


def test_the_sink_stores_session_rule_results_apart_from_trace_scores() -> None:
    look = _session_result(job_id="look", passed=None, reason="keep going")
    verdict = _session_result(job_id="close", final=True, passed=False, value=0.2, reason="never resolved")
    plain = _result(job_id="trace-score", passed=True)
    stored = rows_for(topics.SCORES, encode(ScoreResultBatch(results=[look, plain, verdict])), 1 << 20)
    assert [as_dict(SCORE_COLUMNS, r)["job_id"] for r in stored["scores"]] == ["trace-score"]
    got = [as_dict(SESSION_SCORE_COLUMNS, r) for r in stored["session_scores"]]
    assert [(r["job_id"], r["session_id"], r["session_version"], r["turn"], r["final"], r["passed"]) for r in got] == [
        ("look", "chat-1", 2, 3, False, None), ("close", "chat-1", 2, 3, True, False)]
    assert got[1]["value"] == 0.2 and got[1]["reason"] == "never resolved" and got[1]["trace_id"] == "t3"
    with pytest.raises(ValueError, match="not a session's"):
        rows.session_score_row(plain)


def test_the_sink_stores_sessions_and_their_turns_and_session_decisions() -> None:
    session = _session([_turn(1), _turn(2)], "open")
    stored = rows_for(topics.SESSIONS, encode(session), 1 << 20)
    assert stored == {"sessions": [rows.session_row(session)], "session_turns": rows.session_turn_rows(session)}
    assert topics.SESSIONS in topics.SINK_TOPICS

    batch = DecisionBatch(
        decisions=[Decision(rule="errors", trace_id="t1", trace_version=1, outcome="scored")],
        sessions=[SessionDecision(rule="goal", session_id="chat-1", session_version=2, outcome="sampled_out",
                                  reason="sampling_rate=0.1", turns=4, decided_at_ns=8_000_000)])
    stored = rows_for(topics.DECISIONS, encode(batch), 1 << 20)
    assert [r[0] for r in stored["decisions"]] == ["errors"]
    assert [as_dict(SESSION_DECISION_COLUMNS, r) for r in stored["session_decisions"]] == [{
        "rule": "goal", "session_id": "chat-1", "session_version": 2, "outcome": "sampled_out",
        "reason": "sampling_rate=0.1", "job_id": "", "project": "default", "turns": 4, "source": "live",
        "decided_at": 8_000, "rules_version": ""}]


def test_every_table_the_sink_writes_has_its_column_list() -> None:
    from pipeline.storage.sink import _TABLES

    for table in ("sessions", "session_turns", "session_scores", "session_decisions"):
        assert _TABLES[table] == ddl_columns(table), table


def test_a_span_rules_score_row_names_its_span() -> None:
    row = as_dict(SCORE_COLUMNS, rows.score_row(_result(span_id="s1", span_name="extract")))
    assert (row["span_id"], row["span_name"]) == ("s1", "extract")
    assert as_dict(SCORE_COLUMNS, rows.score_row(_result()))["span_name"] == ""


def test_the_sink_maps_the_assemblers_traces_as_written_to_the_rows_the_models_give() -> None:
    """traces.v2 is mapped to rows without revalidating its spans (only the assembler writes it, from spans it
    validated): the rows must be the ones the validated models give, field for field."""
    from pipeline.contracts import RemoteCallWait, TraceBatch
    from pipeline.contracts.traces import LateSpan
    from pipeline.storage.sink import rows_for

    traces = [
        Trace(trace_id="t", version=3, project="bot", status="incomplete", close_reason="idle_timeout",
              root_span_id="a", name="root", start_ns=1_000_000, end_ns=251_000_000, closed_at_ns=9_000_999,
              waited_for=[RemoteCallWait(span_id="c1", name="call", answered=False, waited_s=3)],
              reopened_by=LateSpan(span_id="z", name="late", late_by_s=2), spans=[
                  FULL_SPAN, _span("a", agent_name="zeta", input_tokens=3, output_tokens=4),
                  _span("b", agent_name="alpha", total_tokens=100, input_tokens=1, kind="client"),
                  _span("c", agent_name="zeta", status="error", cost_usd=0.5),
                  _span("d", status="error", cost_usd=1, error=ErrorInfo(type="E"))]),
        Trace(trace_id="u", version=1, status="complete", close_reason="final_marker"),
    ]
    batch = TraceBatch(traces=traces, decisions=[Decision(
        rule="r", trace_id="t", trace_version=3, outcome="queued", job_id="j", project="bot", decided_at_ns=5)])
    got = rows_for(topics.TRACES, encode(batch), 1 << 20)
    assert got["traces"] == [rows.trace_row(t) for t in traces]
    assert got["spans"] == [rows.span_row(s, t.version) for t in traces for s in t.spans]
    assert got["decisions"] == [rows.decision_row(d) for d in batch.decisions]
    def types(row: list[Any]) -> list[type]:  # a model's default StrEnum member is the same str
        return [str if isinstance(v, str) else type(v) for v in row]

    assert types(got["traces"][0]) == types(rows.trace_row(traces[0]))
    assert types(got["spans"][-1]) == types(rows.span_row(traces[0].spans[-1], 3))


@pytest.mark.parametrize("trace", [
    "not a trace", {"trace_id": "t"}, {"trace_id": "t", "version": "1", "status": "complete",
                                       "close_reason": "final_marker"},
    {"trace_id": "t", "version": 1, "status": "complete", "close_reason": "final_marker", "spans": {}},
    {"trace_id": "t", "version": 1, "status": "complete", "close_reason": "final_marker",
     "spans": [{"trace_id": "t", "span_id": "s", "name": "n", "start_ns": "0", "end_ns": 1}]},
    {"trace_id": "t", "version": 1, "status": "complete", "close_reason": "final_marker", "spans": [None]},
    {"v": 2, "trace_id": "t", "version": 1, "status": "complete", "close_reason": "final_marker"},
])
def test_a_traces_record_not_shaped_as_the_assembler_writes_it_is_a_decode_error(trace: Any) -> None:
    from pipeline.errors import DecodeError
    from pipeline.storage.sink import rows_for

    with pytest.raises(DecodeError):
        rows_for(topics.TRACES, orjson.dumps({"v": 1, "traces": [trace], "decisions": []}), 1 << 20)
    with pytest.raises(DecodeError):
        rows_for(topics.TRACES, orjson.dumps({"v": 1, "decisions": []}), 1 << 20)
