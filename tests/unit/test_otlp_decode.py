"""OTLP/HTTP trace requests (binary protobuf and JSON) -> OtelSpan records; bad payloads name the field."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.errors import OtlpDecodeError
from pipeline.otel.exporter import to_otel_span
from pipeline.otel.mapping import STATUS_ERROR, OtelSpan
from pipeline.otel.otlp import Encoding, decode_traces, encoding_for, status_body, success_body

TRACE = "5B8EFFF798038103D269B633813FC60C"
SPAN = "EEE19B7EC3C1B174"
PARENT = "EEE19B7EC3C1B173"
WHERE = "resourceSpans[0].scopeSpans[0].spans[0]"


def json_request(**span_overrides: Any) -> dict[str, Any]:
    """The shape of the OTLP specification's JSON example."""
    span = {
        "traceId": TRACE, "spanId": SPAN, "parentSpanId": PARENT, "name": "I'm a server span",
        "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": 1544712661000000000, "kind": 2,
        "attributes": [{"key": "my.span.attr", "value": {"stringValue": "some value"}}],
        "status": {"code": 2, "message": "boom"},
        "events": [{"name": "exception", "timeUnixNano": "1544712660500000000",
                    "attributes": [{"key": "exception.type", "value": {"stringValue": "ValueError"}}]}],
    }
    span.update(span_overrides)
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{"scope": {"name": "my.library", "version": "1.0.0"}, "spans": [span]}],
    }]}


def decode_json(document: Any) -> list[OtelSpan]:
    return decode_traces(orjson.dumps(document), Encoding.JSON)


def test_json_request_is_decoded() -> None:
    [span] = decode_json(json_request())
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE.lower(), SPAN.lower(), PARENT.lower())
    assert span.name == "I'm a server span"
    assert (span.start_ns, span.end_ns) == (1544712660000000000, 1544712661000000000)
    assert (span.status_code, span.status_message) == (STATUS_ERROR, "boom")
    assert span.attributes == {"my.span.attr": "some value"}
    assert span.events == [("exception", {"exception.type": "ValueError"})]
    assert span.resource == {"service.name": "my.service"} and span.scope == "my.library"


def test_json_any_values_enum_names_and_snake_case_keys() -> None:
    attributes = [
        {"key": "s", "value": {"stringValue": "x"}}, {"key": "b", "value": {"boolValue": True}},
        {"key": "i", "value": {"intValue": "-42"}}, {"key": "i2", "value": {"intValue": 7}},
        {"key": "d", "value": {"doubleValue": 1.5}}, {"key": "inf", "value": {"doubleValue": "Infinity"}},
        {"key": "bytes", "value": {"bytesValue": "AAE="}}, {"key": "empty", "value": {}},
        {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "two"}]}}},
        {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": False}}]}}},
    ]
    [span] = decode_json({"resource_spans": [{"scope_spans": [{"spans": [{
        "trace_id": TRACE, "span_id": SPAN, "name": "snake", "start_time_unix_nano": 5,
        "end_time_unix_nano": 6, "status": {"code": "STATUS_CODE_OK"}, "attributes": attributes,
        "unknownField": {"ignored": True}}]}]}]})
    assert span.parent_span_id is None and span.status_code == 1
    assert span.attributes == {"s": "x", "b": True, "i": -42, "i2": 7, "d": 1.5, "inf": "Infinity",
                               "bytes": "AAE=", "empty": None, "arr": [1, "two"], "map": {"k": False}}


def test_empty_requests_are_fine() -> None:
    assert decode_json({}) == []
    assert decode_json({"resourceSpans": [{"scopeSpans": []}]}) == []
    assert decode_traces(b"", Encoding.PROTOBUF) == []


def test_protobuf_from_the_sdk_encoder_decodes_to_what_the_exporter_sees() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "svc", "evalstream.project": "p"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("my.scope")
    with tracer.start_as_current_span("root", attributes={"gen_ai.operation.name": "invoke_agent",
                                                          "tags": ("a", "b"), "n": 3, "f": 0.5}):
        try:
            with tracer.start_as_current_span("child"):
                raise ValueError("bad input")
        except ValueError:
            pass
    finished = memory.get_finished_spans()
    body = encode_spans(finished).SerializeToString()
    decoded = decode_traces(body, Encoding.PROTOBUF)
    assert sorted(decoded, key=lambda s: s.span_id) == sorted((to_otel_span(s) for s in finished),
                                                               key=lambda s: s.span_id)
    child = next(s for s in decoded if s.name == "child")
    assert child.status_code == STATUS_ERROR and child.events[0][0] == "exception"
    provider.shutdown()
    assert trace.get_tracer_provider() is not provider  # the test did not touch the global provider


def test_protobuf_invalid_bytes_is_an_error() -> None:
    with pytest.raises(OtlpDecodeError, match="not a binary protobuf ExportTraceServiceRequest"):
        decode_traces(b"\xff\xff\xff\xff", Encoding.PROTOBUF)


def test_protobuf_bad_ids_and_times_name_the_span() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    good = {"trace_id": bytes.fromhex(TRACE), "span_id": bytes.fromhex(SPAN), "name": "ok",
            "start_time_unix_nano": 10, "end_time_unix_nano": 20}
    spans.add(**good)
    spans.add(**{**good, "trace_id": b"\x01" * 5})
    with pytest.raises(OtlpDecodeError) as caught:
        decode_traces(request.SerializeToString(), Encoding.PROTOBUF)
    assert str(caught.value).startswith("resourceSpans[0].scopeSpans[0].spans[1]: traceId must be 32 hex")
    assert caught.value.field_path == "resourceSpans[0].scopeSpans[0].spans[1].traceId"

    del spans[1]
    spans.add(**{**good, "start_time_unix_nano": 30})
    with pytest.raises(OtlpDecodeError, match=r"spans\[1\]: endTimeUnixNano \(20\) is before start"):
        decode_traces(request.SerializeToString(), Encoding.PROTOBUF)


@pytest.mark.parametrize(("change", "message"), [
    ({"traceId": "abc"}, f"{WHERE}: traceId must be 32 hex characters"),
    ({"traceId": "00000000000000000000000000000000"}, f"{WHERE}: traceId must be 32 hex characters"),
    ({"traceId": "zz8EFFF798038103D269B633813FC60C"}, f"{WHERE}: traceId must be 32 hex characters"),
    ({"traceId": 12}, f"{WHERE}: traceId must be a string, got a number"),
    ({"spanId": "EEE19B7E"}, f"{WHERE}: spanId must be 16 hex characters"),
    ({"spanId": None}, f"{WHERE}: spanId must be 16 hex characters"),
    ({"parentSpanId": "nothex!!nothex!!"}, f"{WHERE}: parentSpanId must be empty or 16 hex characters"),
    ({"name": ""}, f"{WHERE}: name must not be empty"),
    ({"name": 5}, f"{WHERE}: name must be a string, got a number"),
    ({"startTimeUnixNano": "soon"}, f"{WHERE}: startTimeUnixNano must be an unsigned 64-bit integer"),
    ({"startTimeUnixNano": -1}, f"{WHERE}: startTimeUnixNano must be an unsigned 64-bit integer"),
    ({"startTimeUnixNano": None}, f"{WHERE}: startTimeUnixNano must be set"),
    ({"endTimeUnixNano": "1544712650000000000"}, f"{WHERE}: endTimeUnixNano (1544712650000000000) is before"),
    ({"status": {"code": "STATUS_CODE_BAD"}}, f"{WHERE}.status: code must be an integer or one of"),
    ({"status": {"code": 9}}, f"{WHERE}: status.code must be 0 (unset), 1 (ok) or 2 (error)"),
    ({"status": "error"}, f"{WHERE}: status must be an object, got a string"),
    ({"attributes": {"k": "v"}}, f"{WHERE}: attributes must be an array, got an object"),
    ({"attributes": [{"key": 1, "value": {}}]}, f"{WHERE}.attributes[0]: key must be a string"),
    ({"attributes": [{"key": "k", "value": {"intValue": "1.5"}}]},
     f"{WHERE}.attributes[0].value: intValue must be a 64-bit integer"),
    ({"attributes": [{"key": "k", "value": {"boolValue": "yes"}}]},
     f"{WHERE}.attributes[0].value: boolValue must be true or false"),
    ({"attributes": [{"key": "k", "value": {"bytesValue": "%%%"}}]},
     f"{WHERE}.attributes[0].value: bytesValue must be base64"),
    ({"attributes": [{"key": "k", "value": {"arrayValue": {"values": [{"doubleValue": "x"}]}}}]},
     f"{WHERE}.attributes[0].value.arrayValue.values[0]: doubleValue must be a number"),
    ({"events": [{"name": 3}]}, f"{WHERE}.events[0]: name must be a string"),
])
def test_bad_json_spans_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(OtlpDecodeError) as caught:
        decode_json(json_request(**change))
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "body is not valid JSON"),
    (b"[]", "expected a JSON object (ExportTraceServiceRequest), got an array"),
    (b'{"resourceSpans": {}}', "resourceSpans must be an array, got an object"),
    (b'{"resourceSpans": [3]}', "resourceSpans[0]: expected an object, got a number"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": ["x"]}]}]}',
     "resourceSpans[0].scopeSpans[0].spans[0]: expected an object, got a string"),
])
def test_bad_json_documents(body: bytes, message: str) -> None:
    with pytest.raises(OtlpDecodeError) as caught:
        decode_traces(body, Encoding.JSON)
    assert str(caught.value).startswith(message), str(caught.value)


def test_deeply_nested_values_are_refused() -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(40):
        value = {"arrayValue": {"values": [value]}}
    with pytest.raises(OtlpDecodeError, match="nested deeper than 32 levels"):
        decode_json(json_request(attributes=[{"key": "deep", "value": value}]))


def test_one_bad_span_rejects_the_request_and_names_it() -> None:
    document = json_request()
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.extend([copy.deepcopy(spans[0]), {**copy.deepcopy(spans[0]), "spanId": "short"}])
    with pytest.raises(OtlpDecodeError, match=r"^resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[2\]: spanId"):
        decode_json(document)


def test_content_types() -> None:
    assert encoding_for("application/x-protobuf") is Encoding.PROTOBUF
    assert encoding_for("application/json; charset=utf-8") is Encoding.JSON
    assert encoding_for("text/plain") is None and encoding_for("") is None


def test_response_bodies_are_valid_in_both_encodings() -> None:
    assert success_body(Encoding.PROTOBUF) == b"" and orjson.loads(success_body(Encoding.JSON)) == {}
    violations = [("resourceSpans[0].scopeSpans[0].spans[0].traceId", "traceId must be 32 hex characters")]

    status = status_pb2.Status.FromString(status_body(Encoding.PROTOBUF, 3, "bad span", violations))
    assert (status.code, status.message) == (3, "bad span")
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == violations

    document = orjson.loads(status_body(Encoding.JSON, 3, "bad span", violations))
    assert document == {"code": 3, "message": "bad span", "details": [{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": violations[0][0], "description": violations[0][1]}]}]}
    plain = status_pb2.Status.FromString(status_body(Encoding.PROTOBUF, 14, "later"))
    assert (plain.code, plain.message, len(plain.details)) == (14, "later", 0)
