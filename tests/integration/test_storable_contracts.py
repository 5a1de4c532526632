"""Every value a contract accepts can be stored: contract-shaped messages with values over the whole range JSON
carries (extreme integers and floats, "inf" and "nan" as strings, times from 0 to past 2262, any Unicode, long
strings, many attributes) are decoded where they enter, mapped to rows (pipeline/storage/rows.py) and inserted
into a real chDB. Each is either refused by validation, naming its field, or stored; no insert fails, because
an insert that fails for its data would be split off and dead-lettered by the sink rather than stored.

Spans take the path they take in the pipeline: a SpanBatch decoded by the assembler, assembled, closed and
priced (pipeline/assembly), then the trace stored. Hypothesis profiles are in tests/conftest.py (`--long` or
EVALSTREAM_LONG=1 for many more examples).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from pydantic import ValidationError

from pipeline import topics
from pipeline.assembly import close_trace, merge_spans
from pipeline.assembly.enrich import enrich_trace
from pipeline.assembly.state import DueAction
from pipeline.contracts import SpanBatch, Trace, decode
from pipeline.contracts.bounds import ATTRIBUTES_MAX
from pipeline.contracts.codec import DEFAULT_MAX_BYTES
from pipeline.errors import DecodeError
from pipeline.storage.client import embedded_dsn
from pipeline.storage.database import Database
from pipeline.storage.sink import _TABLES, rows_for

pytestmark = pytest.mark.integration

# A quarter of the profile's examples per test (each inserts into chDB): about 20 s in all by default.
FEWER = settings(max_examples=max(20, settings().max_examples // 4))

# -- values ---------------------------------------------------------------------------------------

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # the integers JSON carries here (orjson reads and writes these)
INT_EDGES = [INT64_MIN, -(2**31) - 1, -(2**31), -1, 0, 1, 2**15, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1,
             2**32, 2**40, 2**53 + 1, 2**63 - 1, 2**63, UINT64_MAX]
FLOAT_EDGES: list[Any] = [0.0, -0.0, 5e-324, 0.5, 1.0, -1.0, 1e15, 1.0000001e15, 1e300, 1.7976931348623157e308,
                          -1.7976931348623157e308, "inf", "-inf", "nan", "Infinity", "1e400"]
NOW_NS = 1_760_000_000_000_000_000


def ints(lo: int = INT64_MIN, hi: int = UINT64_MAX) -> st.SearchStrategy[int]:
    """Integers from lo to hi, weighted to the edges of every column type among them."""
    edges = [e for e in INT_EDGES if lo <= e <= hi]
    return st.sampled_from(edges) | st.integers(lo, hi) | st.integers(max(lo, 0), min(hi, 1000))


def timestamps(lo: int = INT64_MIN, hi: int = UINT64_MAX) -> st.SearchStrategy[int]:
    """Integers from lo to hi, and times around now."""
    return ints(lo, hi) | st.integers(NOW_NS - 10**18, NOW_NS + 10**18).filter(lambda t: lo <= t <= hi)


def mostly(fits: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`fits` (the column's range) fifteen times in sixteen, else `anything`: most examples fit every column, and
    each field is out of range now and then."""
    return st.integers(0, 15).flatmap(lambda k: anything if k == 0 else fits)


floats = st.sampled_from(FLOAT_EDGES) | st.floats(allow_nan=False, allow_infinity=False)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
UINT16_MAX, UINT32_MAX, INT64_MAX = 2**16 - 1, 2**32 - 1, 2**63 - 1
uint16 = mostly(ints(0, UINT16_MAX), ints())
uint32 = mostly(ints(0, UINT32_MAX), ints())
int32 = mostly(ints(-(2**31), 2**31 - 1), ints())
int64 = mostly(ints(INT64_MIN, INT64_MAX), ints())
versions = mostly(ints(1, UINT32_MAX), ints())
times = mostly(timestamps(0, INT64_MAX), timestamps())  # DateTime64(6) of int64 nanoseconds: 1970..2262
costs = mostly(st.floats(0, 1e15), floats)
numbers = mostly(finite_floats, floats)
rates = mostly(st.floats(0, 1), floats)

LONG_TEXTS = ["x" * 129, "é" * 1025, "\x00" * 3, "\U0010ffff" * 300, "t" * 70_000]
texts = st.text(st.characters(codec="utf-8"), max_size=16) | st.sampled_from(LONG_TEXTS)
names = mostly(st.text(st.characters(codec="utf-8"), min_size=1, max_size=16) | st.just("n" * 1024),
               st.sampled_from(["", "é" * 1025]))
ids = mostly(st.text(st.characters(codec="utf-8"), min_size=1, max_size=12) | st.just("i" * 128),
             st.sampled_from(["", "i" * 129]))
json_scalars = st.none() | st.booleans() | st.integers(INT64_MIN, UINT64_MAX) | finite_floats | texts
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
MANY = {f"k{i}": i for i in range(ATTRIBUTES_MAX + 1)}
attributes = mostly(st.dictionaries(texts, json_values, max_size=4) | st.just(dict(list(MANY.items())[:-1])),
                    st.just(MANY))


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


# -- contract-shaped messages ---------------------------------------------------------------------

@st.composite
def span_dicts(draw: st.DrawFn, trace_id: str) -> dict[str, Any]:
    span: dict[str, Any] = {
        "trace_id": trace_id, "span_id": draw(ids), "name": draw(names),
        "start_ns": draw(times), "end_ns": draw(times),
        "status": draw(st.sampled_from(["ok", "error", "unset"])),
    }
    optional = {
        "parent_span_id": maybe(ids), "span_type": st.sampled_from(["llm", "tool"]) | texts,
        "error": st.fixed_dictionaries({"type": texts, "message": texts}), "attributes": attributes,
        "inputs": json_values, "outputs": json_values, "project": texts, "service": maybe(texts),
        "agent_name": maybe(texts), "agent_id": maybe(texts), "session_id": maybe(texts),
        "model": maybe(st.sampled_from(["gpt-4o-mini", "m"]) | texts), "input_tokens": maybe(uint32),
        "output_tokens": maybe(uint32), "total_tokens": maybe(uint32), "cost_usd": maybe(costs),
        "evaluations": st.lists(st.fixed_dictionaries(
            {"scorer": texts}, optional={"sampling_rate": rates, "threshold": maybe(numbers),
                                         "params": st.dictionaries(texts, json_values, max_size=2)}), max_size=2),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            span[key] = draw(strategy)
    return span


@st.composite
def span_batches(draw: st.DrawFn) -> dict[str, Any]:
    trace_id = draw(ids)
    return {"v": 1, "kind": "spans", "trace_id": trace_id, "final": True,
            "spans": draw(st.lists(span_dicts(trace_id), min_size=1, max_size=3))}


@st.composite
def trace_dicts(draw: st.DrawFn) -> dict[str, Any]:
    trace_id = draw(ids)
    return {"trace_id": trace_id, "version": draw(versions), "project": draw(texts),
            "status": draw(st.sampled_from(["complete", "incomplete"])),
            "close_reason": draw(st.sampled_from(["quiet_period", "final_marker", "idle_timeout"])),
            "root_span_id": draw(maybe(ids)), "name": draw(maybe(names)), "start_ns": draw(times),
            "end_ns": draw(times), "closed_at_ns": draw(times),
            "spans": draw(st.lists(span_dicts(trace_id), max_size=2))}


@st.composite
def turn_dicts(draw: st.DrawFn, session_id: str) -> dict[str, Any]:
    return {"session_id": session_id, "trace_id": draw(ids), "trace_version": draw(versions), "project": draw(texts),
            "name": draw(maybe(texts)), "started_ns": draw(times), "ended_ns": draw(times),
            "status": draw(st.sampled_from(["complete", "incomplete"])), "agents": draw(st.lists(texts, max_size=3)),
            "input": draw(texts), "output": draw(texts), "errors": draw(uint32), "cost_usd": draw(maybe(costs)),
            "ends_session": draw(st.booleans())}


@st.composite
def session_dicts(draw: st.DrawFn) -> dict[str, Any]:
    session_id = draw(ids)
    closed = draw(st.booleans())
    return {"session_id": session_id, "version": draw(versions), "project": draw(texts),
            "status": draw(st.sampled_from(["complete", "incomplete"])) if closed else "open",
            "close_reason": draw(st.sampled_from(["idle_timeout", "end_marker"])) if closed else None,
            "started_ns": draw(times), "ended_ns": draw(times), "closed_at_ns": draw(times),
            "turns": draw(st.lists(turn_dicts(session_id), max_size=3)),
            "finished_rules": draw(st.lists(texts, max_size=2))}


@st.composite
def alert_dicts(draw: st.DrawFn) -> dict[str, Any]:
    attempt = st.fixed_dictionaries({"attempt_id": ids, "channel": texts, "at_ns": times, "ok": st.booleans()},
                                    optional={"http_status": maybe(uint16), "error": maybe(texts),
                                              "retry_after_s": maybe(mostly(st.floats(0, allow_infinity=False), floats))})
    return {"alert_id": draw(ids), "incident_id": draw(texts), "alert_rule": draw(texts),
            "kind": draw(st.sampled_from(["firing", "escalated", "digest", "resolved", "test"])),
            "level": draw(st.sampled_from([None, "warning", "critical"])), "rule": draw(maybe(texts)),
            "group": draw(st.dictionaries(texts, texts, max_size=3)), "title": draw(texts), "text": draw(texts),
            "measure": draw(st.sampled_from(["count", "rate"])), "observed": draw(maybe(numbers)),
            "threshold": draw(maybe(numbers)), "failures": draw(uint32), "samples": draw(maybe(uint32)),
            "suppressed": draw(uint32), "window_s": draw(maybe(numbers)), "window_start_ns": draw(maybe(times)),
            "incident_started_ns": draw(maybe(times)), "trace_ids": draw(st.lists(texts, max_size=3)),
            "fired_at_ns": draw(times), "thread": draw(st.dictionaries(texts, texts, max_size=2)),
            "channel": draw(texts), "delivery_status": draw(st.sampled_from(["delivered", "console", "failed"])),
            "delivery_error": draw(maybe(texts)), "delivery_attempts": draw(uint16),
            "attempts": draw(st.lists(attempt, max_size=2))}


dead_letters = st.fixed_dictionaries({
    "stage": texts, "source_topic": texts, "partition": int32, "offset": int64, "key": maybe(texts),
    "error_type": texts, "reason": texts, "payload_size": mostly(ints(0, INT64_MAX), ints()),
    "payload_excerpt": texts, "trace_id": maybe(texts), "job_id": maybe(texts), "item": maybe(texts), "at_ns": times})
worker_metrics = st.fixed_dictionaries({"v": st.just(1), "kind": st.just("worker_metrics"), "worker": names,
                                        "at_ns": times, "lag": st.lists(st.fixed_dictionaries({
                                            "consumer_group": texts, "topic": texts, "partition": int32,
                                            "lag_records": int64, "lag_seconds": numbers}), max_size=3)})
uploads = st.fixed_dictionaries({"name": texts, "version": texts, "entry": texts,
                                 "kind": st.sampled_from(["class", "function"]), "filename": texts, "source": texts,
                                 "requirements": st.lists(texts, max_size=2), "uploaded_at_ns": times,
                                 "uploaded_by": texts})


# ScoreResult and Decision (pipeline/contracts/jobs.py) do not bound their fields yet: these draw integers within
# their columns only (UInt16 attempts, UInt32 versions, int64 nanoseconds), and the cases below show the rest.
results = st.fixed_dictionaries({
    "job_id": ids, "rule": texts, "scorer": texts, "trace_id": ids, "trace_version": ints(1, UINT32_MAX),
    "status": st.sampled_from(["scored", "error"]),
}, optional={
    "scorer_version": texts, "span_id": maybe(ids), "project": texts, "agent_name": maybe(texts),
    "model": maybe(texts), "value": maybe(finite_floats | st.booleans() | texts), "passed": maybe(st.booleans()),
    "threshold": maybe(finite_floats), "reason": texts, "metadata": st.dictionaries(texts, json_values, max_size=3),
    "criteria": st.lists(st.fixed_dictionaries({"criterion": texts, "verdict": st.sampled_from(
        ["true", "false", "inconclusive"]), "reason": texts}), max_size=2),
    "error_type": maybe(texts), "error_message": maybe(texts), "attempts": ints(0, UINT16_MAX),
    "latency_ms": finite_floats, "source": st.sampled_from(["live", "backfill"]),
    "scored_at_ns": timestamps(0, INT64_MAX),
})
decisions = st.fixed_dictionaries({
    "rule": texts, "trace_id": ids, "trace_version": ints(1, UINT32_MAX),
    "outcome": st.sampled_from(["filtered_out", "sampled_out", "queued", "deferred", "scored", "failed"]),
}, optional={"reason": texts, "job_id": maybe(texts), "project": texts, "source": st.sampled_from(["live", "backfill"]),
             "decided_at_ns": timestamps(0, INT64_MAX)})


# -- the store ------------------------------------------------------------------------------------

class Store:
    """A real chDB, and how many rows each table was given (a module's tests share it in one process)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.given: Counter[str] = Counter()

    def query(self, sql: str) -> Any:
        return asyncio.run(self.db.query(sql))[2][0][0]

    def store_or_refuse(self, topic: str, raw: bytes) -> bool:
        """The message's rows inserted and there (True), or the message refused where it enters (False). An
        insert that fails is what this module looks for, and fails the test."""
        try:
            table_rows = rows_for(topic, raw, DEFAULT_MAX_BYTES)
        except DecodeError as exc:
            assert str(exc).startswith(("does not match", "nested deeper")), exc
            _event(f"{topic}: refused")
            return False
        for table, new in table_rows.items():
            if new:
                asyncio.run(self.db.insert_many({table: new}, _TABLES))
                self.given[table] += len(new)
                assert self.query(f"SELECT count() FROM evalstream.{table}") == self.given[table], table
        _event(f"{topic}: stored")
        return True


def _event(text: str) -> None:
    """hypothesis' statistics, when a hypothesis test is running (plain tests use the store too)."""
    try:
        event(text)
    except InvalidArgument:
        pass


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    db = Database(embedded_dsn(Path(tmp_path_factory.mktemp("storable")) / "clickhouse"), "evalstream")
    asyncio.run(db.open(30))
    # No merges, not even of an inserted block with itself: replacing tables would fold rows with equal keys,
    # and the counts would not add up.
    db._client.command("SYSTEM STOP MERGES")
    db._client.set_client_setting("optimize_on_insert", 0)
    try:
        yield Store(db)
    finally:
        asyncio.run(db.close())


class FlatPrices:
    """A price table: what litellm's cost map would answer for tokens, or nonsense for model "m"."""

    def cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        if model == "m":
            return float("nan")
        return input_tokens * 1e-6 + output_tokens * 1e-5


# -- the properties -------------------------------------------------------------------------------

@FEWER
@given(span_batches())
def test_spans_the_assembler_accepts_are_stored_as_traces(store: Store, batch: dict[str, Any]) -> None:
    raw = orjson.dumps(batch)
    try:
        decoded = decode(raw, SpanBatch)  # the edge: the assembler dead-letters what fails here
    except DecodeError as exc:
        assert "spans." in str(exc) or "trace_id" in str(exc), exc  # names the field
        return
    spans = [s.model_dump(mode="json", exclude_none=True) for s in decoded.spans]
    state, _ = merge_spans(None, decoded.trace_id, 0, spans, True, time.time())
    trace = enrich_trace(close_trace(state, DueAction.CLOSE_FINAL, time.time()), FlatPrices())
    assert store.store_or_refuse(topics.TRACES, orjson.dumps({"v": 1, "traces": [trace]})), \
        "a trace of accepted spans was refused downstream"


@FEWER
@given(trace_dicts())
def test_traces_are_stored_or_refused(store: Store, trace: dict[str, Any]) -> None:
    """traces.v2 is written only by the assembler, and the sink maps its traces to rows without validating them
    again (rows.trusted_trace_rows): the contract is checked where the trace is made. So: a trace the contract
    refuses is never written; one it accepts, written as the assembler writes it (dumped), is stored."""
    try:
        accepted = Trace.model_validate(trace)
    except ValidationError:
        _event(f"{topics.TRACES}: refused")
        return
    written = accepted.model_dump(mode="json", exclude_none=True)
    assert store.store_or_refuse(topics.TRACES, orjson.dumps({"v": 1, "traces": [written]})), \
        "a trace the contract accepts was refused by the sink"


@FEWER
@given(session_dicts())
def test_sessions_are_stored_or_refused(store: Store, session: dict[str, Any]) -> None:
    store.store_or_refuse(topics.SESSIONS, orjson.dumps(session))


@FEWER
@given(alert_dicts())
def test_alerts_are_stored_or_refused(store: Store, alert: dict[str, Any]) -> None:
    store.store_or_refuse(topics.ALERTS, orjson.dumps(alert))


@FEWER
@given(dead_letters, worker_metrics, uploads)
def test_dead_letters_metrics_and_uploads_are_stored_or_refused(store: Store, letter: dict[str, Any],
                                                                 metrics: dict[str, Any],
                                                                 upload: dict[str, Any]) -> None:
    store.store_or_refuse(topics.DEAD_LETTERS, orjson.dumps(letter))
    store.store_or_refuse(topics.METRICS, orjson.dumps(metrics))
    store.store_or_refuse(topics.SCORERS, orjson.dumps(upload))


@FEWER
@given(st.lists(results, min_size=1, max_size=3), st.lists(decisions, min_size=1, max_size=3))
def test_scores_and_decisions_within_their_columns_are_stored(store: Store, results: list[dict[str, Any]],
                                                             decisions: list[dict[str, Any]]) -> None:
    store.store_or_refuse(topics.SCORES, orjson.dumps({"v": 1, "results": results}))
    store.store_or_refuse(topics.DECISIONS, orjson.dumps({"v": 1, "decisions": decisions}))


RESULT = {"job_id": "j", "rule": "r", "scorer": "s", "trace_id": "t", "trace_version": 1, "status": "scored"}
DECISION = {"rule": "r", "trace_id": "t", "trace_version": 1, "outcome": "scored"}


@pytest.mark.parametrize("topic, item, field, value", [
    (topics.SCORES, RESULT, "attempts", UINT16_MAX + 1), (topics.SCORES, RESULT, "trace_version", UINT32_MAX + 1),
    (topics.SCORES, RESULT, "scored_at_ns", INT64_MAX + 1), (topics.SCORES, RESULT, "scored_at_ns", -1),
    (topics.SCORES, RESULT, "latency_ms", "inf"), (topics.SCORES, RESULT, "threshold", "nan"),
    (topics.DECISIONS, DECISION, "trace_version", UINT32_MAX + 1), (topics.DECISIONS, DECISION, "decided_at_ns", -1),
])
def test_scores_and_decisions_out_of_their_columns_are_refused(store: Store, topic: str, item: dict[str, Any],
                                                               field: str, value: Any) -> None:
    field_list = "results" if topic == topics.SCORES else "decisions"
    assert not store.store_or_refuse(topic, orjson.dumps({"v": 1, field_list: [{**item, field: value}]}))
