"""Fuzzing the OTLP receiver: request body (protobuf or JSON) -> OtelSpans -> wire spans -> SpanBatch
messages, and the HTTP handler around it (with a fake publisher, no Kafka).

Properties: a body is either accepted, and then every message it became is a SpanBatch the assembler
decodes, or refused with an OtlpDecodeError (HTTP 400 with a google.rpc.Status) that names where the
problem is; nothing else escapes, so an OTLP client never sees a 500 for what it sent.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import re
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.rpc import status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from pipeline.contracts import SpanBatch, decode
from pipeline.contracts.bounds import TIMESTAMP_NS_MAX
from pipeline.errors import OtlpDecodeError
from pipeline.otel.batches import Message, span_batches
from pipeline.otel.mapping import OtelSpan, to_wire_span
from pipeline.otel.otlp import Encoding, decode_traces
from pipeline.otel.receiver import ReceiverConfig, create_app

FEWER = settings(max_examples=max(20, settings().max_examples // 4))
INT64 = st.integers(-(2**63), 2**63 - 1)


def receive(body: bytes, encoding: Encoding) -> list[SpanBatch] | OtlpDecodeError:
    """What the receiver does with a body before publishing, then what the assembler reads back."""
    try:
        spans = decode_traces(body, encoding)
    except OtlpDecodeError as exc:
        # where (empty for the whole body) and what: "resourceSpans[0].scopeSpans[0].spans[2]: spanId must ..."
        assert exc.location == "" or exc.location.startswith("resourceSpans["), repr(exc)
        assert exc.problem.strip() and str(exc) == (f"{exc.location}: {exc.problem}" if exc.location
                                                    else exc.problem)
        return exc
    wire = [to_wire_span(span, ReceiverConfig().project) for span in spans]
    batches = [decode(m.value, SpanBatch) for m in span_batches(wire, 8 * 1024 * 1024)]
    assert sum(len(b.spans) for b in batches) == len(spans)
    return batches


# -- strategies: a valid request, written both as protobuf and as JSON ------------------------------

def nonzero_bytes(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size).filter(lambda b: any(b))


any_values = st.recursive(
    st.tuples(st.just("s"), st.text(max_size=12)) | st.tuples(st.just("b"), st.booleans())
    | st.tuples(st.just("i"), INT64) | st.tuples(st.just("d"), st.floats(allow_nan=False, allow_infinity=False))
    | st.tuples(st.just("y"), st.binary(max_size=8)),
    lambda inner: st.tuples(st.just("a"), st.lists(inner, max_size=3))
    | st.tuples(st.just("k"), st.lists(st.tuples(st.text(max_size=6), inner), max_size=3)),
    max_leaves=6)
key_values = st.lists(st.tuples(st.text(max_size=10), any_values), max_size=3)


@st.composite
def span_specs(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(st.integers(1, TIMESTAMP_NS_MAX))  # later times are refused (test below)
    return {
        "trace_id": draw(nonzero_bytes(16)), "span_id": draw(nonzero_bytes(8)),
        "parent_span_id": draw(st.none() | nonzero_bytes(8)), "name": draw(st.text(min_size=1, max_size=12)),
        "start": start, "end": draw(st.integers(start, TIMESTAMP_NS_MAX)), "code": draw(st.integers(0, 2)),
        "message": draw(st.text(max_size=12)), "attributes": draw(key_values),
        "events": draw(st.lists(st.tuples(st.text(max_size=8), key_values), max_size=2)),
    }


@st.composite
def request_specs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """resourceSpans -> scopeSpans -> spans, as nested lists of specs."""
    return draw(st.lists(st.fixed_dictionaries({
        "resource": key_values,
        "scopes": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8),
                                                  "spans": st.lists(span_specs(), max_size=3)}), max_size=2),
    }), max_size=2))


def expected(kind: str, value: Any) -> Any:
    if kind == "a":
        return [expected(*v) for v in value]
    if kind == "k":
        return {k: expected(*v) for k, v in value}
    if kind == "y":
        return base64.b64encode(value).decode()
    return float(value) if kind == "d" else value


def pb_value(target: AnyValue, kind: str, value: Any) -> None:
    if kind == "a":
        target.array_value.SetInParent()
        for v in value:
            pb_value(target.array_value.values.add(), *v)
    elif kind == "k":
        target.kvlist_value.SetInParent()
        for k, v in value:
            pb_value(target.kvlist_value.values.add(key=k).value, *v)
    else:
        setattr(target, {"s": "string_value", "b": "bool_value", "i": "int_value", "d": "double_value",
                         "y": "bytes_value"}[kind], value)


def pb_attributes(target: Any, pairs: list[tuple[str, Any]]) -> None:
    for key, value in pairs:
        pb_value(target.add(key=key).value, *value)


def to_protobuf(spec: list[dict[str, Any]]) -> bytes:
    request = ExportTraceServiceRequest()
    for resource in spec:
        resource_spans = request.resource_spans.add()
        pb_attributes(resource_spans.resource.attributes, resource["resource"])
        for scope in resource["scopes"]:
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = scope["name"]
            for s in scope["spans"]:
                span = scope_spans.spans.add(
                    trace_id=s["trace_id"], span_id=s["span_id"], parent_span_id=s["parent_span_id"] or b"",
                    name=s["name"], start_time_unix_nano=s["start"], end_time_unix_nano=s["end"])
                span.status.code = s["code"]
                span.status.message = s["message"]
                pb_attributes(span.attributes, s["attributes"])
                for name, attributes in s["events"]:
                    pb_attributes(span.events.add(name=name).attributes, attributes)
    return request.SerializeToString()


def json_value(kind: str, value: Any, style: int) -> dict[str, Any]:
    if kind == "a":
        return {"arrayValue": {"values": [json_value(*v, style) for v in value]}}
    if kind == "k":
        return {"kvlistValue": {"values": [{"key": k, "value": json_value(*v, style)} for k, v in value]}}
    if kind == "i":
        return {"intValue": str(value) if style % 2 else value}  # both are allowed for 64-bit integers
    if kind == "y":
        return {"bytesValue": base64.b64encode(value).decode()}
    return {{"s": "stringValue", "b": "boolValue", "d": "doubleValue"}[kind]: value}


def json_attributes(pairs: list[tuple[str, Any]], style: int) -> list[dict[str, Any]]:
    return [{"key": key, "value": json_value(*value, style)} for key, value in pairs]


def to_json(spec: list[dict[str, Any]], style: int) -> bytes:
    """style varies what senders vary: hex case, integers as strings, snake_case keys, enum names."""
    def hex_id(raw: bytes | None) -> str:
        return "" if raw is None else (raw.hex().upper() if style & 4 else raw.hex())

    def key(camel: str) -> str:
        return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), camel) if style & 8 else camel

    codes = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"]
    return orjson.dumps({key("resourceSpans"): [{
        "resource": {"attributes": json_attributes(r["resource"], style)},
        key("scopeSpans"): [{"scope": {"name": scope["name"]}, "spans": [{
            key("traceId"): hex_id(s["trace_id"]), key("spanId"): hex_id(s["span_id"]),
            key("parentSpanId"): hex_id(s["parent_span_id"]), "name": s["name"],
            key("startTimeUnixNano"): str(s["start"]) if style & 2 else s["start"],
            key("endTimeUnixNano"): str(s["end"]) if style & 2 else s["end"],
            "status": {"code": codes[s["code"]] if style & 16 else s["code"], "message": s["message"]},
            "attributes": json_attributes(s["attributes"], style),
            "events": [{"name": n, "attributes": json_attributes(a, style)} for n, a in s["events"]],
        } for s in scope["spans"]]} for scope in r["scopes"]],
    } for r in spec]})


# -- valid requests -------------------------------------------------------------------------------

@FEWER
@given(request_specs(), st.integers(0, 31))
def test_protobuf_and_json_bodies_decode_to_the_same_spans_and_are_accepted(spec: list[dict[str, Any]],
                                                                             style: int) -> None:
    from_pb = decode_traces(to_protobuf(spec), Encoding.PROTOBUF)
    from_json = decode_traces(to_json(spec, style), Encoding.JSON)
    assert from_pb == from_json
    specs = [s for r in spec for scope in r["scopes"] for s in scope["spans"]]
    assert len(from_pb) == len(specs)
    for span, s in zip(from_pb, specs, strict=True):
        assert (span.trace_id, span.span_id) == (s["trace_id"].hex(), s["span_id"].hex())
        assert (span.start_ns, span.end_ns, span.status_code) == (s["start"], s["end"], s["code"])
        assert span.attributes == {k: expected(*v) for k, v in s["attributes"]}

    batches = receive(to_protobuf(spec), Encoding.PROTOBUF)
    assert not isinstance(batches, OtlpDecodeError)
    published = [(b.trace_id, s.span_id) for b in batches for s in b.spans]
    assert sorted(published) == sorted((s["trace_id"].hex(), s["span_id"].hex()) for s in specs)
    # one message per trace here, final exactly when the request carried the trace's root
    roots = {s["trace_id"].hex() for s in specs if s["parent_span_id"] is None}
    assert {b.trace_id: b.final for b in batches} == {s["trace_id"].hex(): s["trace_id"].hex() in roots
                                                      for s in specs}
    assert len(batches) == len({s["trace_id"] for s in specs})


# -- garbage --------------------------------------------------------------------------------------

@given(st.binary(max_size=1024), st.sampled_from(list(Encoding)))
def test_arbitrary_bytes_are_accepted_or_refused_with_a_location(body: bytes, encoding: Encoding) -> None:
    receive(body, encoding)


json_values = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10)
# OTLP-shaped documents whose leaves are anything: the walker meets wrong types at every level.
_OTLP_KEYS = ["resourceSpans", "scopeSpans", "spans", "resource", "scope", "attributes", "events", "status",
              "traceId", "spanId", "parentSpanId", "name", "startTimeUnixNano", "endTimeUnixNano", "code",
              "message", "key", "value", "values", "stringValue", "boolValue", "intValue", "doubleValue",
              "bytesValue", "arrayValue", "kvlistValue", "trace_id", "start_time_unix_nano"]
otlp_shaped = st.recursive(
    json_values | st.sampled_from(["", "0" * 32, "ab" * 8, "AB" * 16, "18446744073709551616", "NaN",
                                   "STATUS_CODE_OK", "aGVsbG8="]) | st.integers(2**63, 2**64 - 1),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_OTLP_KEYS), inner, max_size=5),
    max_leaves=30)


@given(json_values)
def test_arbitrary_json_is_accepted_or_refused_with_a_location(document: Any) -> None:
    receive(orjson.dumps(document), Encoding.JSON)


@given(otlp_shaped)
def test_otlp_shaped_json_with_wrong_types_anywhere(document: Any) -> None:
    receive(orjson.dumps(document), Encoding.JSON)


@FEWER
@given(request_specs(), st.binary(min_size=1, max_size=16), st.data())
def test_corrupted_protobuf_is_accepted_or_refused(spec: list[dict[str, Any]], junk: bytes,
                                                   data: st.DataObject) -> None:
    body = to_protobuf(spec)
    at = data.draw(st.integers(0, len(body)), label="at")
    receive(body[:at] + junk + body[at:], Encoding.PROTOBUF)
    receive(body[:at], Encoding.PROTOBUF)


# One field of one span made wrong: (field, bad value, what the error says after the span's location).
_SPAN_FIELD_ERRORS = [
    ("traceId", 5, "traceId must be a string"), ("traceId", "xyz", "traceId must be 32 hex"),
    ("traceId", "0" * 32, "traceId must be 32 hex"), ("traceId", "ab" * 15, "traceId must be 32 hex"),
    ("traceId", "g" * 32, "traceId must be 32 hex"), ("spanId", "", "spanId must be 16 hex"),
    ("spanId", "ab" * 16, "spanId must be 16 hex"), ("parentSpanId", "zz" * 8, "parentSpanId must be empty"),
    ("name", "", "name must not be empty"), ("name", ["n"], "name must be a string"),
    ("startTimeUnixNano", "soon", "startTimeUnixNano must be an unsigned 64-bit integer"),
    ("startTimeUnixNano", -1, "startTimeUnixNano must be an unsigned 64-bit integer"),
    ("startTimeUnixNano", str(2**64), "startTimeUnixNano must be an unsigned 64-bit integer"),
    ("startTimeUnixNano", True, "startTimeUnixNano must be an unsigned 64-bit integer"),
    ("startTimeUnixNano", 1.5, "startTimeUnixNano must be an unsigned 64-bit integer"),
    ("startTimeUnixNano", "9" * 5000, "startTimeUnixNano must be an unsigned 64-bit integer"),
    ("startTimeUnixNano", 0, "startTimeUnixNano must be set"),
    ("endTimeUnixNano", 1, "endTimeUnixNano (1) is before"),
    ("endTimeUnixNano", str(TIMESTAMP_NS_MAX + 1), "is past the latest time the pipeline stores"), ("status", "ok", "status must be an object"),
    ("status", {"code": "STATUS_CODE_MAYBE"}, "status: code must be an integer or one of"),
    ("status", {"code": 7}, "status.code must be 0 (unset), 1 (ok) or 2 (error)"),
    ("attributes", {"k": "v"}, "attributes must be an array"), ("attributes", [5], "attributes[0]: expected"),
    ("attributes", [{"key": None}], "attributes[0]: key must be a string"),
    ("attributes", [{"key": "k", "value": {"intValue": "9" * 5000}}], "attributes[0].value: intValue must be"),
    ("events", [{"name": 3}], "events[0]: name must be a string"),
]


@FEWER
@given(request_specs().filter(lambda spec: any(scope["spans"] for r in spec for scope in r["scopes"])),
       st.sampled_from(_SPAN_FIELD_ERRORS), st.data())
def test_a_wrong_span_field_is_named_with_its_location(spec: list[dict[str, Any]],
                                                       case: tuple[str, Any, str], data: st.DataObject) -> None:
    field, bad, problem = case
    document = orjson.loads(to_json(spec, 0))
    places = [(r, s, k) for r, resource in enumerate(document["resourceSpans"])
              for s, scope in enumerate(resource["scopeSpans"]) for k in range(len(scope["spans"]))]
    r, s, k = data.draw(st.sampled_from(places), label="span")
    span = document["resourceSpans"][r]["scopeSpans"][s]["spans"][k]
    span[field] = bad
    if field == "endTimeUnixNano":
        span["startTimeUnixNano"] = 2
    outcome = receive(orjson.dumps(document), Encoding.JSON)
    assert isinstance(outcome, OtlpDecodeError)
    where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{k}]"
    assert str(outcome).startswith(where), str(outcome)
    assert problem in str(outcome), str(outcome)
    assert outcome.field_path.startswith(where) and len(str(outcome)) < 400


# -- odd values under the attribute names the mapping reads ---------------------------------------

_MAPPED_KEYS = ["gen_ai.usage.input_tokens", "llm.token_count.total", "llm.cost.total", "gen_ai.input.messages",
                "gen_ai.output.messages", "gen_ai.prompt", "input.value", "output.value", "evalstream.span_type",
                "evalstream.project", "gen_ai.agent.name", "openinference.span.kind", "gen_ai.operation.name",
                "gen_ai.response.model", "error.type"]
_DEEP = "[" * 300 + "]" * 300
odd_strings = st.sampled_from(["9" * 5000, "0" * 40 + "7", _DEEP, '{"a":' * 200 + "1" + "}" * 200, "[1, 2",
                               "{}", "[]", " ", "\x00", "application/json", "1e400", "-3", "LLM"]) | st.text(max_size=8)
odd_keys = st.sampled_from(_MAPPED_KEYS) | st.builds(
    lambda prefix, index, tail: f"{prefix}.{index}{tail}",
    st.sampled_from(["llm.input_messages", "llm.output_messages", "gen_ai.prompt", "gen_ai.completion"]),
    st.sampled_from(["0", "1", "9" * 5000, "00", "x"]),
    st.sampled_from(["", ".message.role", ".message.content", ".a" * 300, ".0.1"]))
odd_values = (st.tuples(st.just("s"), odd_strings) | st.tuples(st.just("i"), INT64)
              | st.tuples(st.just("d"), st.sampled_from([1.5, -1.0, 1e300, 0.0]))
              | st.tuples(st.just("a"), st.lists(st.tuples(st.just("s"), odd_strings), max_size=2)))


@FEWER
@given(span_specs(), st.lists(st.tuples(odd_keys, odd_values), min_size=1, max_size=5),
       st.sampled_from(["application/json", "text/plain", ""]))
def test_odd_values_under_mapped_attribute_names_are_accepted(span: dict[str, Any], pairs: list[Any],
                                                              mime: str) -> None:
    span["attributes"] = [*pairs, ("input.mime_type", ("s", mime)), ("output.mime_type", ("s", mime))]
    spec = [{"resource": [], "scopes": [{"name": "", "spans": [span]}]}]
    for body, encoding in ((to_protobuf(spec), Encoding.PROTOBUF), (to_json(spec, 0), Encoding.JSON)):
        outcome = receive(body, encoding)
        assert not isinstance(outcome, OtlpDecodeError), outcome


T, S = "11" * 16, "22" * 8


@pytest.mark.parametrize(("key", "value", "kept"), [
    # int() refuses over 4300 digits: was a ValueError (HTTP 500); not a usable count, so kept as is
    ("gen_ai.usage.input_tokens", "9" * 5000, lambda span: span.attributes["gen_ai.usage.input_tokens"]),
    # a list index of 5000 digits: was a ValueError; not an index, so kept as an attribute
    ("llm.input_messages." + "9" * 5000, "x", lambda span: span.attributes["llm.input_messages." + "9" * 5000]),
    # orjson read 300 levels, then could not write them: was a TypeError; kept as the sender's text
    ("gen_ai.input.messages", "[" * 300 + "]" * 300, lambda span: span.inputs),
    # a 300-level dotted path: was a TypeError; the structure is kept as text
    ("llm.input_messages.0" + ".a" * 300, "x", lambda span: isinstance(span.inputs, str) and "x" in span.inputs
     and span.inputs.count("'a'") == 300 and "x"),
])
def test_regressions_found_by_fuzzing_are_accepted(key: str, value: str, kept: Any) -> None:
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": T, "spanId": S, "name": "n", "startTimeUnixNano": 1, "endTimeUnixNano": 2,
        "attributes": [{"key": key, "value": {"stringValue": value}}]}]}]}]}
    outcome = receive(orjson.dumps(document), Encoding.JSON)
    assert not isinstance(outcome, OtlpDecodeError)
    [batch] = outcome
    assert batch.spans[0].input_tokens is None
    assert kept(batch.spans[0]) == value


def test_deep_json_text_is_kept_as_the_text_the_sender_wrote() -> None:
    span = OtelSpan(trace_id=T, span_id=S, parent_span_id=None, name="n", start_ns=1, end_ns=2,
                    attributes={"input.value": _DEEP, "input.mime_type": "application/json",
                                "gen_ai.output.messages": "[[1]]"})
    wire = to_wire_span(span)
    assert wire["inputs"] == _DEEP and wire["outputs"] == [[1]]


# -- over HTTP ------------------------------------------------------------------------------------

class FakePublisher:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.started = True

    async def publish(self, messages: Sequence[Message]) -> None:
        self.messages.extend(messages)

    async def close(self) -> None:
        pass


class Receiver:
    """One receiver for the whole module, driven from synchronous hypothesis tests on its own loop."""

    def __init__(self) -> None:
        self.publisher = FakePublisher()
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._start())

    async def _start(self) -> TestClient:
        server = TestServer(create_app(self.publisher, ReceiverConfig()))
        await server.start_server(auto_decompress=False)  # as `serve` runs it
        client = TestClient(server)
        await client.start_server()
        return client

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes, list[Message]]:
        self.publisher.messages = []

        async def send() -> tuple[int, str, bytes]:
            response = await self.client.post("/v1/traces", data=body, headers=headers)
            return response.status, response.content_type, await response.read()

        return (*self.loop.run_until_complete(send()), self.publisher.messages)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def http() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def status_message(content_type: str, body: bytes) -> tuple[int, str]:
    if content_type == "application/json":
        status = orjson.loads(body)
        return status["code"], status["message"]
    status = status_pb2.Status.FromString(body)
    return status.code, status.message


bodies = (st.binary(max_size=512) | json_values.map(orjson.dumps) | otlp_shaped.map(orjson.dumps)
          | request_specs().map(to_protobuf) | request_specs().map(lambda spec: to_json(spec, 0)))


@FEWER
@given(bodies, st.sampled_from(list(Encoding)), st.sampled_from(["identity", "gzip", "gzip-claimed-only"]))
def test_http_answers_200_or_a_400_status_never_a_500(http: Receiver, body: bytes, encoding: Encoding,
                                                      content_encoding: str) -> None:
    headers = {"Content-Type": encoding.value}
    sent = body
    if content_encoding != "identity":
        headers["Content-Encoding"] = "gzip"
        sent = gzip.compress(body) if content_encoding == "gzip" else body
    status, content_type, reply, messages = http.post(sent, headers)
    assert content_type == encoding.value  # answered in the request's own encoding
    pure = receive(body, encoding)
    if content_encoding == "gzip-claimed-only" and body.startswith(b"\x1f\x8b"):
        assert status == 400 and "gzip" in status_message(content_type, reply)[1]
        return
    if isinstance(pure, OtlpDecodeError):
        assert status == 400
        assert status_message(content_type, reply) == (3, str(pure))  # INVALID_ARGUMENT, the decoder's words
        assert messages == []
    else:
        assert status == 200, status_message(content_type, reply)
        assert [decode(m.value, SpanBatch) for m in messages] == pure


@given(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40), st.binary(max_size=64))
def test_any_content_type_is_415_or_handled(http: Receiver, content_type: str, body: bytes) -> None:
    status, reply_type, reply, _ = http.post(body, {"Content-Type": content_type})
    assert status in (200, 400, 415)
    if status != 200:
        assert status_message(reply_type, reply)[1]
    if status == 415:
        assert reply_type == "application/json"
        assert "is not supported" in orjson.loads(reply)["message"]
