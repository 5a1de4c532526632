"""pipeline/contracts/codec.py: bytes <-> contract models."""

from __future__ import annotations

import orjson
import pytest

from pipeline.contracts import (
    ErrorInfo,
    EvaluationRequest,
    Span,
    SpanBatch,
    Trace,
    TraceBatch,
    decode,
    encode,
    pack_items,
)
from pipeline.errors import DecodeError, OversizedError


def _span(span_id: str, parent: str | None = None, **kw) -> Span:
    return Span(trace_id="t-1", span_id=span_id, parent_span_id=parent, name=f"op-{span_id}",
                start_ns=kw.pop("start_ns", 1_000), end_ns=kw.pop("end_ns", 2_000), **kw)


def _batch() -> SpanBatch:
    return SpanBatch(
        trace_id="t-1",
        final=True,
        spans=[
            _span("root", project="bot", agent_name="planner", agent_id="a1", session_id="s",
                  attributes={"tenant": "acme", "n": 3, "nested": {"k": [1, 2]}, "nothing": None},
                  inputs={"q": "hi", "none": None}, outputs=["x", None]),
            _span("child", parent="root", span_type="llm", status="error",
                  error=ErrorInfo(type="ValueError", message="boom", stack="tb"),
                  model="gpt", input_tokens=10, output_tokens=5, total_tokens=15, cost_usd=0.25,
                  evaluations=[EvaluationRequest(scorer="mod:judge", example={"inputs": "q"},
                                                 sampling_rate=0.5, threshold=0.7)]),
        ],
    )


def test_span_batch_round_trips() -> None:
    batch = _batch()
    raw = encode(batch)
    assert isinstance(raw, bytes)
    back = decode(raw, SpanBatch)
    assert back == batch
    # None values inside free-form payloads survive (only absent optional fields are dropped)
    assert back.spans[0].attributes["nothing"] is None
    assert back.spans[0].inputs == {"q": "hi", "none": None}
    assert back.spans[1].error.type == "ValueError"
    assert back.spans[1].evaluations[0].threshold == 0.7


def test_trace_round_trips() -> None:
    batch = _batch()
    trace = Trace(trace_id="t-1", version=2, project="bot", status="complete", close_reason="final_marker",
                  root_span_id="root", name="op-root", start_ns=1_000, end_ns=5_000, closed_at_ns=9,
                  spans=batch.spans)
    back = decode(encode(trace), Trace)
    assert back == trace
    assert back.root is not None and back.root.span_id == "root"
    assert back.has_error and back.cost_usd == 0.25


def test_encode_omits_none_fields() -> None:
    payload = orjson.loads(encode(_span("root")))
    assert "parent_span_id" not in payload and "error" not in payload


def test_none_message_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="empty message"):
        decode(None, SpanBatch)


@pytest.mark.parametrize("raw", [b"not json at all", b"{\"trace_id\": ", b"\xff\xfe\x00", b""])
def test_non_json_bytes_are_a_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode(raw, SpanBatch)


@pytest.mark.parametrize("raw, kind", [(b"[1, 2]", "list"), (b"\"text\"", "str"), (b"42", "int"),
                                       (b"null", "NoneType")])
def test_json_that_is_not_an_object_is_a_decode_error(raw: bytes, kind: str) -> None:
    with pytest.raises(DecodeError, match=f"expected a JSON object, got {kind}"):
        decode(raw, SpanBatch)


def test_wrong_schema_names_the_model_and_the_field() -> None:
    raw = orjson.dumps({"trace_id": "t", "spans": [{"trace_id": "t", "span_id": "s", "name": "n",
                                                    "start_ns": "yesterday", "end_ns": 1}]})
    with pytest.raises(DecodeError) as info:
        decode(raw, SpanBatch)
    message = str(info.value)
    assert "SpanBatch" in message
    assert "spans.0.start_ns" in message
    assert not isinstance(info.value, OversizedError)


def test_missing_required_field_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="trace_id"):
        decode(b'{"spans": []}', SpanBatch)


def test_unknown_contract_version_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"\bv\b"):
        decode(orjson.dumps({"v": 2, "trace_id": "t"}), SpanBatch)


def test_many_errors_are_summarised_with_a_count() -> None:
    spans = [{"trace_id": "t"} for _ in range(4)]  # each misses span_id, name, start_ns, end_ns
    with pytest.raises(DecodeError, match=r"and \d+ more"):
        decode(orjson.dumps({"trace_id": "t", "spans": spans}), SpanBatch)


def test_oversized_message_is_rejected_before_parsing() -> None:
    raw = encode(_batch())
    assert decode(raw, SpanBatch, max_bytes=len(raw)) == _batch()  # exactly at the limit is fine
    with pytest.raises(OversizedError) as info:
        decode(raw, SpanBatch, max_bytes=len(raw) - 1)
    assert isinstance(info.value, DecodeError)
    assert str(len(raw)) in str(info.value) and str(len(raw) - 1) in str(info.value)


def test_oversized_wins_even_for_garbage() -> None:
    with pytest.raises(OversizedError):
        decode(b"x" * 101, SpanBatch, max_bytes=100)


def test_unknown_extra_fields_are_ignored_at_every_level() -> None:
    data = orjson.loads(encode(_batch()))
    data["added_in_v1_1"] = {"anything": True}
    data["spans"][0]["new_span_field"] = 123
    data["spans"][1]["error"]["new_error_field"] = "x"
    data["spans"][1]["evaluations"][0]["new_eval_field"] = []
    back = decode(orjson.dumps(data), SpanBatch)
    assert back == _batch()
    assert not hasattr(back, "added_in_v1_1")


def test_pack_items_splits_at_the_size_limit_keeps_order_and_sends_an_oversized_item_alone() -> None:
    traces = [Trace(trace_id=f"t{i}", version=1, status="complete", close_reason="final_marker",
                    spans=[Span(trace_id=f"t{i}", span_id="r", name="x", outputs="y" * (5000 if i == 3 else 10), start_ns=0,
                                end_ns=1)]) for i in range(8)]
    parts = [encode(t) for t in traces]
    messages = list(pack_items("traces", parts, max_bytes=1200))

    decoded = [(decode(value, TraceBatch, max_bytes=10_000), first) for value, first in messages]
    assert [t.trace_id for batch, _ in decoded for t in batch.traces] == [f"t{i}" for i in range(8)]
    firsts = [first for _, first in decoded]
    assert 3 in firsts and 4 in firsts  # t3 travels alone
    assert all(len(value) <= 1200 for value, first in messages if first != 3)
    for (value, first), nxt in zip(messages, [*firsts[1:], len(parts)], strict=True):  # each message is full
        assert nxt == len(parts) or first == 3 or nxt == 3 or len(value) + len(parts[nxt]) + 1 > 1200
    assert list(pack_items("traces", [], max_bytes=1200)) == []
