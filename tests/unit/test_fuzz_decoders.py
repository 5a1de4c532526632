"""Fuzzing the span decoder (`codec.decode(raw, SpanBatch)`): whatever arrives on the spans topic, the
assembler gets a SpanBatch or a DecodeError that says what is wrong, never another exception.

Hypothesis profiles live in tests/conftest.py (`--long` or EVALSTREAM_LONG=1 for many more examples).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.contracts import SpanBatch, decode, encode, load_object, validate_each
from pipeline.contracts.bounds import (
    ATTRIBUTES_MAX,
    COST_USD_MAX,
    TIMESTAMP_NS_MAX,
    UINT32_MAX,
)
from pipeline.contracts.codec import DEFAULT_MAX_BYTES
from pipeline.contracts.spans import SpanStatus, SpanType
from pipeline.errors import DecodeError, OversizedError

# What each kind of DecodeError starts with: the reader of a dead letter learns what went wrong.
_KNOWN_PROBLEM = re.compile(r"^(empty message|not valid JSON: .+|expected a JSON object, got \w+"
                            r"|nested deeper than \d+ levels|does not match SpanBatch v1: .+"
                            r"|message of \d+ bytes exceeds the limit of \d+ bytes)$", re.DOTALL)


def decoded_or_explained(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> SpanBatch | DecodeError:
    """The batch, or the DecodeError; any other exception fails the test."""
    try:
        return decode(raw, SpanBatch, max_bytes=max_bytes)
    except DecodeError as exc:
        assert _KNOWN_PROBLEM.match(str(exc)), f"unexplained DecodeError: {exc!r}"
        return exc


# Whole generated batches are costly to draw: those tests run a quarter of the profile's examples.
MAX_DEPTH = SpanBatch.max_depth
FEWER = settings(max_examples=max(20, settings().max_examples // 4))

# -- strategies -----------------------------------------------------------------------------------

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # the integers orjson reads and writes

json_scalars = (st.none() | st.booleans() | st.integers(INT64_MIN, UINT64_MAX)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
ids = st.text(min_size=1, max_size=8) | st.text(min_size=120, max_size=128)  # short, and at the limit
uint64 = st.integers(0, UINT64_MAX)
timestamps = st.integers(0, TIMESTAMP_NS_MAX)  # what the contract admits (a DateTime64 of int64 nanoseconds)
token_counts = st.integers(0, UINT32_MAX)  # UInt32 columns
costs = st.floats(0, COST_USD_MAX)
optional_text = st.none() | st.text(max_size=8)


@st.composite
def evaluations(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "scorer": draw(st.text(max_size=8)),
        "example": draw(st.none() | st.dictionaries(st.text(max_size=6), json_values, max_size=2)),
        "sampling_rate": draw(st.floats(0.0, 1.0)),
        "threshold": draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        "params": draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)),
    }


@st.composite
def spans(draw: st.DrawFn, trace_id: str) -> dict[str, Any]:
    span: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": draw(ids),
        "parent_span_id": draw(st.none() | ids),
        "name": draw(st.text(min_size=1, max_size=12) | st.just("n" * 1024)),
        "span_type": draw(st.sampled_from(list(SpanType)) | st.text(max_size=8)),
        "start_ns": draw(timestamps),
        "end_ns": draw(timestamps),
        "status": draw(st.sampled_from(list(SpanStatus))),
        "attributes": draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
        "inputs": draw(json_values),
        "outputs": draw(json_values),
        "project": draw(st.text(max_size=8)),
        "service": draw(optional_text),
        "agent_name": draw(optional_text),
        "session_id": draw(optional_text),
        "model": draw(optional_text),
        "input_tokens": draw(st.none() | token_counts),
        "output_tokens": draw(st.none() | token_counts),
        "cost_usd": draw(st.none() | costs),
        "evaluations": draw(st.lists(evaluations(), max_size=1)),
    }
    if draw(st.booleans()):
        span["error"] = {"type": draw(st.text(max_size=8)), "message": draw(st.text(max_size=20)),
                         "stack": draw(optional_text)}
    return span


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    trace_id = draw(ids)
    return {"trace_id": trace_id, "final": draw(st.booleans()),
            "spans": draw(st.lists(spans(trace_id), max_size=3))}


# -- garbage never escapes as anything but a DecodeError ------------------------------------------

@given(st.binary(max_size=2048))
def test_arbitrary_bytes_decode_or_raise_a_decode_error(raw: bytes) -> None:
    outcome = decoded_or_explained(raw)
    if isinstance(outcome, SpanBatch):  # only when the bytes happen to be a SpanBatch
        assert isinstance(orjson.loads(raw), dict)


@given(json_values)
def test_arbitrary_json_decodes_or_names_the_problem(value: Any) -> None:
    outcome = decoded_or_explained(orjson.dumps(value))
    if not isinstance(value, dict):
        assert isinstance(outcome, DecodeError)
        assert str(outcome).startswith("expected a JSON object, got ")
    elif "trace_id" not in value:
        assert isinstance(outcome, DecodeError) and "trace_id: Field required" in str(outcome)


@FEWER
@given(batches(), st.binary(min_size=1, max_size=64), st.data())
def test_truncated_or_corrupted_messages_are_decode_errors(batch: dict[str, Any], junk: bytes,
                                                           data: st.DataObject) -> None:
    raw = orjson.dumps(batch)
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    outcome = decoded_or_explained(raw[:cut])
    assert isinstance(outcome, DecodeError)  # a cut JSON object is never a complete one
    decoded_or_explained(raw[:cut] + junk + raw[cut:])


# -- well-formed JSON, wrong types: the error names the field -------------------------------------

# (path in the batch, values the contract refuses there). Each replaces one value of a valid batch.
_WRONG = {
    ("v",): [2, "1", None],
    ("kind",): ["traces", 1],
    ("trace_id",): [5, "", "x" * 129, None, [], {}],
    ("final",): ["maybe", 2, [], {}],
    ("spans",): ["span", 5, {"0": {}}],
    ("spans", 0): ["span", 5, [], None],
    ("spans", 0, "trace_id"): [5, "", "x" * 129, None],
    ("spans", 0, "span_id"): [5, "", "x" * 129, None, 1.5],
    ("spans", 0, "parent_span_id"): [5, [], {}],
    ("spans", 0, "name"): [3, "", "n" * 1025, None, []],
    ("spans", 0, "span_type"): [3, [], None],
    ("spans", 0, "start_ns"): ["yesterday", -1, 1.5, None, [], 1e30, TIMESTAMP_NS_MAX + 1],
    ("spans", 0, "end_ns"): ["soon", -1, 2.5, None, {}, UINT64_MAX],
    ("spans", 0, "status"): ["bogus", 3, None, []],
    ("spans", 0, "error"): ["boom", 5, [], {"message": "no type"}],
    ("spans", 0, "attributes"): ["a=b", 5, [["a", 1]], None, {str(i): i for i in range(ATTRIBUTES_MAX + 1)}],
    ("spans", 0, "input_tokens"): ["many", 1.5, [], "1e3", -1, UINT32_MAX + 1, 2**40],
    ("spans", 0, "output_tokens"): [-1, UINT32_MAX + 1],
    ("spans", 0, "total_tokens"): [-1, UINT64_MAX],
    ("spans", 0, "cost_usd"): ["free", [], {}, -0.01, "inf", "-inf", "nan", COST_USD_MAX * 2],
    ("spans", 0, "evaluations"): ["judge", 5, {"scorer": "x"}],
    ("spans", 0, "evaluations", 0, "scorer"): [1, None, []],
    ("spans", 0, "evaluations", 0, "sampling_rate"): [1.5, -0.1, "often"],
}
_CASES = [(path, bad) for path, values in _WRONG.items() for bad in values]


@st.composite
def batches_with_a_span_and_evaluation(draw: st.DrawFn) -> dict[str, Any]:
    batch = draw(batches())
    span = draw(spans(batch["trace_id"]))
    span["evaluations"] = [draw(evaluations())]
    batch["spans"] = [span, *batch["spans"]]
    return batch


@FEWER
@given(batches_with_a_span_and_evaluation(), st.sampled_from(_CASES))
def test_a_wrong_typed_field_is_named_in_the_error(batch: dict[str, Any],
                                                   case: tuple[tuple[str | int, ...], Any]) -> None:
    assert_named_in_the_error(batch, *case)


def assert_named_in_the_error(batch: dict[str, Any], path: tuple[str | int, ...], bad: Any) -> None:
    node: Any = batch
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = bad
    with pytest.raises(DecodeError) as caught:
        decode(orjson.dumps(batch), SpanBatch)
    where = ".".join(str(p) for p in path)
    message = str(caught.value)
    # pydantic names the field itself, or a part of it (error.type for a bad error object)
    assert re.search(rf"(^|: |; ){re.escape(where)}(\.[\w.]+)?: ", message), message
    assert not isinstance(caught.value, OversizedError)


# -- huge values ----------------------------------------------------------------------------------

@FEWER
@given(batches(), st.integers(-64, 64))
def test_the_size_limit_is_exact_and_checked_before_parsing(batch: dict[str, Any], delta: int) -> None:
    raw = orjson.dumps(batch)
    limit = max(0, len(raw) + delta)
    outcome = decoded_or_explained(raw, max_bytes=limit)
    if len(raw) > limit:
        assert isinstance(outcome, OversizedError)
        assert f"message of {len(raw)} bytes exceeds the limit of {limit} bytes" == str(outcome)
    else:
        assert isinstance(outcome, SpanBatch)


@pytest.mark.parametrize("size", [129, 10_000, 1 << 20])
def test_huge_ids_are_refused_by_name_without_echoing_them(size: int) -> None:
    raw = orjson.dumps({"trace_id": "t" * size, "spans": []})
    with pytest.raises(DecodeError) as caught:
        decode(raw, SpanBatch)
    assert "trace_id: String should have at most 128 characters" in str(caught.value)
    assert len(str(caught.value)) < 500  # a megabyte id does not become a megabyte log line


def test_huge_payload_values_within_the_limit_are_kept_whole() -> None:
    blob = "é" * (3 << 20)  # 6 MiB of UTF-8: under the default 8 MiB limit
    batch = {"trace_id": "t", "spans": [{"trace_id": "t", "span_id": "s", "name": "n", "start_ns": 1,
                                         "end_ns": 2, "inputs": blob, "attributes": {"big": blob[:1000]}}]}
    decoded = decode(orjson.dumps(batch), SpanBatch)
    assert decoded.spans[0].inputs == blob
    with pytest.raises(OversizedError):
        decode(orjson.dumps({**batch, "spans": batch["spans"] * 2}), SpanBatch)


def nested_message(levels: int, container: str) -> bytes:
    """A SpanBatch whose whole document is `levels` deep: batch, spans list, span, then `inputs`."""
    opener, closer = {"list": (b"[", b"]"), "object": (b'{"k":', b"}")}[container]
    inner = levels - 3
    return (b'{"trace_id":"t","spans":[{"trace_id":"t","span_id":"s","name":"n","start_ns":1,"end_ns":2,'
            b'"inputs":' + opener * inner + b"0" + closer * inner + b"}]}")


@given(st.integers(4, 1100), st.sampled_from(["list", "object"]))
def test_what_decodes_can_be_encoded_again_at_any_nesting_depth(levels: int, container: str) -> None:
    """Regression: inputs 200 levels deep decoded, then the trace could not be written (orjson writes
    only 254 levels), so the assembler closed the trace and never emitted it."""
    outcome = decoded_or_explained(nested_message(levels, container))
    if levels <= MAX_DEPTH:
        assert isinstance(outcome, SpanBatch), outcome
        assert decode(encode(outcome), SpanBatch) == outcome
        # downstream messages wrap the spans deeper (a backfill batch: traces, a trace, its spans): still written
        orjson.dumps({"traces": [{"spans": [outcome.spans[0].model_dump(mode="json")]}], "x": [[[]]]})
    elif levels <= 1024:
        assert str(outcome) == f"nested deeper than {MAX_DEPTH} levels"
    else:
        assert str(outcome).startswith("not valid JSON")


def test_many_brackets_inside_strings_are_not_nesting() -> None:
    raw = orjson.dumps({"trace_id": "t", "spans": [{"trace_id": "t", "span_id": "s", "name": "[{" * 500,
                                                    "start_ns": 1, "end_ns": 2, "inputs": [[["x"]]]}]})
    assert decode(raw, SpanBatch).spans[0].name == "[{" * 500


# -- valid batches round-trip ---------------------------------------------------------------------

@FEWER
@given(batches())
def test_valid_batches_round_trip(data: dict[str, Any]) -> None:
    batch = SpanBatch.model_validate(data)
    raw = encode(batch)
    back = decode(raw, SpanBatch)
    assert back == batch
    assert encode(back) == raw  # and the bytes are stable: re-publishing changes nothing
    for sent, got in zip(data["spans"], back.spans, strict=True):
        assert got.attributes == sent["attributes"] and got.inputs == sent["inputs"]
        assert (got.start_ns, got.end_ns) == (sent["start_ns"], sent["end_ns"])


@FEWER
@given(batches(), st.dictionaries(st.text(max_size=12), json_values, max_size=3))
def test_unknown_fields_from_a_newer_writer_are_ignored(data: dict[str, Any],
                                                        extra: dict[str, Any]) -> None:
    known = set(SpanBatch.model_fields)
    assume(not known & set(extra))
    batch = SpanBatch.model_validate(data)
    assert decode(orjson.dumps({**extra, **orjson.loads(encode(batch))}), SpanBatch) == batch


_FIXED = {"trace_id": "t", "final": True, "spans": [{
    "trace_id": "t", "span_id": "s", "parent_span_id": "p", "name": "n", "span_type": "llm", "start_ns": 1,
    "end_ns": 2, "status": "ok", "error": {"type": "E"}, "attributes": {}, "input_tokens": 1, "cost_usd": 0.1,
    "evaluations": [{"scorer": "j", "sampling_rate": 0.5}]}]}


@pytest.mark.parametrize(("path", "bad"), _CASES, ids=[f"{'.'.join(map(str, p))}={b!r:.20}" for p, b in _CASES])
def test_every_wrong_typed_field_is_named(path: tuple[str | int, ...], bad: Any) -> None:
    """Every case of the table on one fixed batch (the property above samples them on random batches)."""
    assert_named_in_the_error(orjson.loads(orjson.dumps(_FIXED)), path, bad)


# -- SpanBundles: many traces' batches in one message, each decoded alone ------------------------

_ITEM_PROBLEM = re.compile(r"^batches\[\d+\]: (expected a JSON object, got \w+|nested deeper than \d+ levels"
                           r"|does not match SpanBatch v1: .+)$", re.DOTALL)


@FEWER
@given(st.lists(batches() | json_values | st.tuples(st.just("nested"), st.integers(4, 240)), min_size=1, max_size=5))
def test_a_bundle_decodes_each_batch_alone_and_names_the_index_of_a_bad_one(items: list[Any]) -> None:
    def nested(levels: int) -> Any:
        value: Any = []
        for _ in range(levels):
            value = [value]
        return {"v": 1, "kind": "spans", "trace_id": "deep", "spans": [], "attributes": value}

    items = [nested(item[1]) if isinstance(item, tuple) else item for item in items]
    raw = orjson.dumps({"v": 1, "kind": "span_bundle", "batches": items})
    decoded = validate_each(load_object(raw), SpanBatch, "batches", raw)

    assert len(decoded) == len(items)
    for index, (item, result) in enumerate(zip(items, decoded, strict=True)):
        if isinstance(result, DecodeError):
            assert _ITEM_PROBLEM.match(str(result)) and str(result).startswith(f"batches[{index}]: "), result
        else:  # what one batch decodes to alone, it decodes to inside a bundle
            assert result == decode(orjson.dumps(item), SpanBatch)
