"""OTLP/HTTP trace payloads: request bodies (binary protobuf or JSON) -> `OtelSpan` records, and the
response bodies an OTLP/HTTP server sends (an empty ExportTraceServiceResponse, or a google.rpc.Status),
both in the request's own encoding.

JSON follows the OTLP deviations from the proto3 JSON mapping: traceId/spanId are hex (any case),
64-bit integers may be numbers or decimal strings. We are lenient where senders differ: enum values
may be integers or names, and keys may be lowerCamelCase or the proto's snake_case. Unknown fields
are ignored. Every error is an `OtlpDecodeError` naming where the problem is.
"""

from __future__ import annotations

import base64
import binascii
import math
from enum import StrEnum
from typing import Any

import orjson
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.errors import OtlpDecodeError
from pipeline.otel.mapping import OtelSpan, check_span

MAX_VALUE_DEPTH = 32


class Encoding(StrEnum):
    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


_CONTENT_TYPES = {"application/x-protobuf": Encoding.PROTOBUF, "application/protobuf": Encoding.PROTOBUF,
                  "application/json": Encoding.JSON}


def encoding_for(content_type: str) -> Encoding | None:
    return _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())


def decode_traces(body: bytes, encoding: Encoding) -> list[OtelSpan]:
    """Every span of an ExportTraceServiceRequest; raises OtlpDecodeError on the first bad one."""
    return _decode_protobuf(body) if encoding is Encoding.PROTOBUF else _decode_json(body)


def _checked(span: OtelSpan, where: str) -> OtelSpan:
    problem = check_span(span)
    if problem is not None:
        raise OtlpDecodeError(where, problem[1], field=problem[0])
    return span


# -- binary protobuf ------------------------------------------------------------------------------

def _decode_protobuf(body: bytes) -> list[OtelSpan]:
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except ProtobufDecodeError as exc:
        raise OtlpDecodeError(
            "", f"body is not a binary protobuf ExportTraceServiceRequest ({exc})") from None
    spans: list[OtelSpan] = []
    for r, resource_spans in enumerate(request.resource_spans):
        resource = _pb_attributes(resource_spans.resource.attributes)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            scope = scope_spans.scope.name or None
            for k, span in enumerate(scope_spans.spans):
                spans.append(_checked(OtelSpan(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() or None,
                    name=span.name,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    status_code=span.status.code,
                    status_message=span.status.message,
                    attributes=_pb_attributes(span.attributes),
                    events=[(event.name, _pb_attributes(event.attributes)) for event in span.events],
                    resource=resource,
                    scope=scope,
                    kind=span.kind,
                ), f"resourceSpans[{r}].scopeSpans[{s}].spans[{k}]"))
    return spans


def _pb_attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in key_values}


def _pb_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)
    return getattr(value, kind)


# -- JSON -----------------------------------------------------------------------------------------

_STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_SPAN_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
               "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}


def _type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


class _Walker:
    """Reads one JSON object at `where`, raising errors that name the location and field."""

    def __init__(self, obj: Any, where: str, what: str = "an object") -> None:
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise OtlpDecodeError(where, f"expected {what}, got {_type(obj)}")
        self.obj = obj
        self.where = where

    def fail(self, name: str, problem: str) -> OtlpDecodeError:
        return OtlpDecodeError(self.where, f"{name} {problem}", field=name)

    def get(self, name: str) -> Any:
        value = self.obj.get(name)
        if value is None:  # the proto's own field name, which some senders use
            value = self.obj.get("".join("_" + c.lower() if c.isupper() else c for c in name))
        return value

    def array(self, name: str) -> list[Any]:
        value = self.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(name, f"must be an array, got {_type(value)}")
        return value

    def child(self, name: str) -> _Walker:
        value = self.get(name)
        if value is not None and not isinstance(value, dict):
            raise self.fail(name, f"must be an object, got {_type(value)}")
        return _Walker(value, f"{self.where}.{name}" if self.where else name)

    def string(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string, got {_type(value)}")
        return value

    def uint64(self, name: str) -> int:
        if self.get(name) is None:
            return 0
        value = _integer(self.get(name))
        if value is None or not 0 <= value < 2**64:
            raise self.fail(name, f"must be an unsigned 64-bit integer (a number or a decimal string), "
                                  f"got {self.get(name)!r:.40}")
        return value

    def enum(self, name: str, names: dict[str, int]) -> int:
        value = self.get(name)
        if value is None:
            return 0
        if isinstance(value, str) and value in names:
            return names[value]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self.fail(name, f"must be an integer or one of {', '.join(names)}, got {value!r:.40}")

    def hex_id(self, name: str) -> str:
        # Lower-cased only: check_span rejects anything that is not hex of the right length.
        return self.string(name).lower()

    def attributes(self, name: str = "attributes") -> dict[str, Any]:
        out: dict[str, Any] = {}
        base = f"{self.where}.{name}" if self.where else name
        for i, item in enumerate(self.array(name)):
            kv = _Walker(item, f"{base}[{i}]", "a key-value object")
            key = kv.get("key")
            if not isinstance(key, str):
                raise kv.fail("key", f"must be a string, got {_type(key)}")
            out[key] = _any_value(kv.get("value"), f"{base}[{i}].value", 0)
        return out


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value, 10)
        except ValueError:
            return None
    return None


def _double(value: Any) -> float | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in ("NaN", "Infinity", "-Infinity"):
            return value
        try:
            return float(value)
        except ValueError:
            return None
    return None


_ANY_VALUE_FIELDS = ("stringValue", "boolValue", "intValue", "doubleValue", "bytesValue", "arrayValue",
                     "kvlistValue")


def _any_value(raw: Any, where: str, depth: int) -> Any:
    if depth > MAX_VALUE_DEPTH:
        raise OtlpDecodeError(where, f"value is nested deeper than {MAX_VALUE_DEPTH} levels")
    value = _Walker(raw, where, "an AnyValue object")
    for name in _ANY_VALUE_FIELDS:
        item = value.get(name)
        if item is None:
            continue
        if name == "stringValue":
            return value.string(name)
        if name == "boolValue":
            if not isinstance(item, bool):
                raise value.fail(name, f"must be true or false, got {_type(item)}")
            return item
        if name == "intValue":
            number = _integer(item)
            if number is None or not -(2**63) <= number < 2**63:
                raise value.fail(name, "must be a 64-bit integer (a number or a decimal string), "
                                       f"got {item!r:.40}")
            return number
        if name == "doubleValue":
            double = _double(item)
            if double is None:
                raise value.fail(name, f"must be a number, got {item!r:.40}")
            return double
        if name == "bytesValue":
            text = value.string(name)
            try:
                base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise value.fail(name, "must be base64") from None
            return text
        inner = value.child(name)
        if name == "arrayValue":
            return [_any_value(v, f"{inner.where}.values[{i}]", depth + 1)
                    for i, v in enumerate(inner.array("values"))]
        out: dict[str, Any] = {}
        for i, item_kv in enumerate(inner.array("values")):
            kv = _Walker(item_kv, f"{inner.where}.values[{i}]", "a key-value object")
            key = kv.get("key")
            if not isinstance(key, str):
                raise kv.fail("key", f"must be a string, got {_type(key)}")
            out[key] = _any_value(kv.get("value"), f"{kv.where}.value", depth + 1)
        return out
    return None  # an empty AnyValue


def _decode_json(body: bytes) -> list[OtelSpan]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpDecodeError("", f"body is not valid JSON ({exc})") from None
    request = _Walker(document, "", "a JSON object (ExportTraceServiceRequest)")
    spans: list[OtelSpan] = []
    for r, raw_resource_spans in enumerate(request.array("resourceSpans")):
        resource_spans = _Walker(raw_resource_spans, f"resourceSpans[{r}]")
        resource = resource_spans.child("resource").attributes()
        for s, raw_scope_spans in enumerate(resource_spans.array("scopeSpans")):
            scope_spans = _Walker(raw_scope_spans, f"resourceSpans[{r}].scopeSpans[{s}]")
            scope = scope_spans.child("scope").string("name") or None
            for k, raw_span in enumerate(scope_spans.array("spans")):
                span = _Walker(raw_span, f"{scope_spans.where}.spans[{k}]")
                status = span.child("status")
                events = []
                for e, raw_event in enumerate(span.array("events")):
                    event = _Walker(raw_event, f"{span.where}.events[{e}]")
                    events.append((event.string("name"), event.attributes()))
                spans.append(_checked(OtelSpan(
                    trace_id=span.hex_id("traceId"),
                    span_id=span.hex_id("spanId"),
                    parent_span_id=span.hex_id("parentSpanId") or None,
                    name=span.string("name"),
                    start_ns=span.uint64("startTimeUnixNano"),
                    end_ns=span.uint64("endTimeUnixNano"),
                    status_code=status.enum("code", _STATUS_CODES),
                    status_message=status.string("message"),
                    attributes=span.attributes(),
                    events=events,
                    resource=resource,
                    scope=scope,
                    kind=span.enum("kind", _SPAN_KINDS),
                ), span.where))
    return spans


# -- responses ------------------------------------------------------------------------------------

# google.rpc.Code values for Status.code (OTLP clients do not act on it; it helps whoever reads logs).
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 3, 8, 13, 14, 16
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def success_body(encoding: Encoding) -> bytes:
    """An ExportTraceServiceResponse with `partial_success` unset: empty in both encodings."""
    return b"" if encoding is Encoding.PROTOBUF else b"{}"


def status_body(encoding: Encoding, code: int, message: str,
                violations: list[tuple[str, str]] | None = None) -> bytes:
    """A google.rpc.Status; `violations` (field path, description) become a google.rpc.BadRequest detail."""
    if encoding is Encoding.JSON:
        status: dict[str, Any] = {"code": code, "message": message}
        if violations:
            status["details"] = [{"@type": _BAD_REQUEST_TYPE, "fieldViolations": [
                {"field": f, "description": d} for f, d in violations]}]
        return orjson.dumps(status)
    # Encoded by hand: googleapis-common-protos is not a dependency of the pipeline.
    body = _varint(1 << 3) + _varint(code) if code else b""
    body += _bytes_field(2, message.encode())
    if violations:
        bad_request = b"".join(_bytes_field(1, _bytes_field(1, f.encode()) + _bytes_field(2, d.encode()))
                               for f, d in violations)
        body += _bytes_field(3, _bytes_field(1, _BAD_REQUEST_TYPE.encode()) + _bytes_field(2, bad_request))
    return body


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data
