"""pipeline/contracts/bounds.py: the contracts accept only what their ClickHouse columns hold, and the two
producers we ship (the SDK's wire spans, the OpenTelemetry mapping) stay within those bounds: a producer's value
out of range for an optional field is left out rather than costing the whole batch. (Every contract against a
real chDB: tests/integration/test_storable_contracts.py.)"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from pipeline.contracts import (
    Alert,
    DeadLetter,
    Session,
    Span,
    SpanBatch,
    Trace,
    Turn,
    WorkerMetrics,
    decode,
)
from pipeline.contracts.bounds import (
    ATTRIBUTES_MAX,
    COST_USD_MAX,
    NAME_MAX_CHARS,
    SPAN_TYPE_MAX_CHARS,
    TIMESTAMP_NS_MAX,
    UINT32_MAX,
    cap_attributes,
)
from pipeline.errors import DecodeError
from pipeline.otel.mapping import OtelSpan, check_span, to_wire_span
from pipeline.sdk.testing import recording_tracer

SPAN = {"trace_id": "t", "span_id": "s", "name": "n", "start_ns": 1, "end_ns": 2}


@pytest.mark.parametrize("field, value", [
    ("input_tokens", -1), ("output_tokens", UINT32_MAX + 1), ("total_tokens", 2**40), ("cost_usd", -0.5),
    ("cost_usd", "inf"), ("cost_usd", "nan"), ("cost_usd", COST_USD_MAX * 10), ("start_ns", TIMESTAMP_NS_MAX + 1),
    ("end_ns", -1), ("span_type", "t" * (SPAN_TYPE_MAX_CHARS + 1)), ("parent_span_id", "p" * 129),
    ("attributes", {str(i): i for i in range(ATTRIBUTES_MAX + 1)}),
])
def test_a_span_value_no_column_holds_is_refused_naming_the_field(field: str, value: Any) -> None:
    raw = orjson.dumps({"trace_id": "t", "spans": [{**SPAN, field: value}]})
    with pytest.raises(DecodeError, match=rf"spans\.0\.{field}: "):
        decode(raw, SpanBatch)


def test_the_edges_of_every_span_column_are_accepted() -> None:
    span = Span.model_validate({**SPAN, "input_tokens": 0, "output_tokens": UINT32_MAX, "total_tokens": UINT32_MAX,
                                "cost_usd": COST_USD_MAX, "start_ns": 0, "end_ns": TIMESTAMP_NS_MAX,
                                "attributes": {str(i): i for i in range(ATTRIBUTES_MAX)}})
    assert span.end_ns == TIMESTAMP_NS_MAX


@pytest.mark.parametrize("model, fields", [
    (Trace, {"trace_id": "t", "version": UINT32_MAX + 1, "status": "complete", "close_reason": "quiet_period"}),
    (Trace, {"trace_id": "t", "version": 1, "status": "complete", "close_reason": "quiet_period", "end_ns": -1}),
    (Turn, {"session_id": "s", "trace_id": "t", "errors": UINT32_MAX + 1}),
    (Turn, {"session_id": "s", "trace_id": "t", "cost_usd": float("inf")}),
    (Session, {"session_id": "s", "version": 0, "status": "open"}),
    (Session, {"session_id": "s", "version": 1, "status": "open", "closed_at_ns": 2**63}),
    (DeadLetter, {"stage": "x", "source_topic": "t", "error_type": "E", "reason": "r", "at_ns": 1,
                  "partition": 2**31}),
    (DeadLetter, {"stage": "x", "source_topic": "t", "error_type": "E", "reason": "r", "at_ns": 1,
                  "payload_size": -1}),
    (Alert, {"alert_id": "a", "alert_rule": "r", "title": "t", "text": "x", "fired_at_ns": 1,
             "delivery_attempts": 2**16}),
    (Alert, {"alert_id": "a", "alert_rule": "r", "title": "t", "text": "x", "fired_at_ns": 1, "observed": "nan"}),
    (Alert, {"alert_id": "a", "alert_rule": "r", "title": "t", "text": "x", "fired_at_ns": 1,
             "attempts": [{"attempt_id": "1", "channel": "c", "at_ns": 1, "ok": False, "http_status": 70_000}]}),
    (WorkerMetrics, {"worker": "w", "at_ns": 1, "lag": [{"consumer_group": "g", "topic": "t", "partition": 0,
                                                         "lag_records": 2**63, "lag_seconds": 0}]}),
])
def test_other_contracts_refuse_what_their_columns_cannot_hold(model: Any, fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(fields)


def test_cap_attributes_keeps_the_first_and_counts_the_rest() -> None:
    many = {f"k{i}": i for i in range(ATTRIBUTES_MAX + 10)}
    capped = cap_attributes(many, "dropped")
    assert len(capped) == ATTRIBUTES_MAX and capped["dropped"] == 11 and capped["k0"] == 0
    small = {"a": 1}
    assert cap_attributes(small) is small


# -- the SDK ----------------------------------------------------------------------------------------

def test_the_sdk_leaves_out_usage_no_column_holds_and_cuts_long_names() -> None:
    tracer, exporter = recording_tracer()
    with tracer.span("n" * (NAME_MAX_CHARS + 5), span_type="t" * 100) as span:
        span.record_llm(model="m", input_tokens=-1, output_tokens=2**40, cost_usd=-3.0)
        for i in range(ATTRIBUTES_MAX + 1):
            span.set_attribute(f"a{i}", i)
    with tracer.span("ok") as span:
        span.record_llm(model="m", input_tokens=UINT32_MAX, output_tokens=1, cost_usd=0.25)
    tracer.flush()
    bad, ok = (Span.model_validate(orjson.loads(orjson.dumps(w))) for w in exporter.spans)
    assert len(bad.name) == NAME_MAX_CHARS and len(bad.span_type) == SPAN_TYPE_MAX_CHARS
    assert (bad.input_tokens, bad.output_tokens, bad.total_tokens, bad.cost_usd) == (None, None, None, None)
    assert len(bad.attributes) == ATTRIBUTES_MAX and bad.attributes["evalstream.dropped_attributes"] == 2
    # both counts fit, their sum does not: the total is left out, the counts kept
    assert (ok.input_tokens, ok.output_tokens, ok.total_tokens, ok.cost_usd) == (UINT32_MAX, 1, None, 0.25)


# -- OpenTelemetry ----------------------------------------------------------------------------------

def otel(attributes: dict[str, Any], **fields: Any) -> OtelSpan:
    base: dict[str, Any] = {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "00f067aa0ba902b7",
                            "parent_span_id": None, "name": "chat", "start_ns": 1_700_000_000_000_000_000,
                            "end_ns": 1_700_000_000_250_000_000, "attributes": attributes}
    return OtelSpan(**{**base, **fields})


def test_otel_usage_out_of_range_stays_an_attribute_and_the_span_is_valid() -> None:
    wire = to_wire_span(otel({"gen_ai.usage.input_tokens": UINT32_MAX, "gen_ai.usage.output_tokens": 5,
                              "llm.cost.total": COST_USD_MAX * 2, "llm.token_count.prompt": -4}))
    span = Span.model_validate(wire)
    assert (span.input_tokens, span.output_tokens, span.total_tokens, span.cost_usd) == (UINT32_MAX, 5, None, None)
    assert span.attributes["llm.cost.total"] == COST_USD_MAX * 2 and span.attributes["llm.token_count.prompt"] == -4


def test_otel_attributes_past_the_limit_are_counted_not_sent() -> None:
    wire = to_wire_span(otel({f"a{i}": i for i in range(ATTRIBUTES_MAX + 3)}))
    span = Span.model_validate(wire)
    assert len(span.attributes) == ATTRIBUTES_MAX and span.attributes["otel.dropped_attributes"] >= 4


def test_an_otel_span_ending_after_what_the_store_holds_is_refused_by_name() -> None:
    field, problem = check_span(otel({}, end_ns=TIMESTAMP_NS_MAX + 1)) or ("", "")
    assert field == "endTimeUnixNano" and "2262" in problem
    assert check_span(otel({}, end_ns=TIMESTAMP_NS_MAX)) is None
