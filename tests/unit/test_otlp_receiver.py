"""The OTLP/HTTP receiver with a fake publisher: what an OTLP client gets back, and what reaches Kafka."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pipeline.contracts import SpanBatch, decode
from pipeline.errors import PublishError
from pipeline.otel.batches import Message
from pipeline.otel.receiver import ReceiverConfig, create_app

PROTOBUF = {"Content-Type": "application/x-protobuf"}
PROTOBUF_GZIP = {**PROTOBUF, "Content-Encoding": "gzip"}
JSON = {"Content-Type": "application/json"}
TOKEN = "s3cret"


class FakePublisher:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.error: str | None = None
        self.gate: asyncio.Event | None = None
        self.started = True
        self.closed = False

    async def publish(self, messages: Sequence[Message]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.error:
            raise PublishError(self.error)
        self.messages.extend(messages)

    async def close(self) -> None:
        self.closed = True

    def batches(self) -> list[SpanBatch]:
        return [decode(m.value, SpanBatch) for m in self.messages]


def request_body(traces: dict[str, int], *, span_attribute_bytes: int = 0) -> bytes:
    """A protobuf request with `n` spans per trace id; span 0 of each trace is its root."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "svc"
    spans = resource_spans.scope_spans.add().spans
    for trace_id, count in traces.items():
        for i in range(count):
            span = spans.add(trace_id=bytes.fromhex(trace_id), span_id=(i + 1).to_bytes(8, "big"),
                             parent_span_id=b"" if i == 0 else (1).to_bytes(8, "big"), name=f"span-{i}",
                             start_time_unix_nano=1_000 + i, end_time_unix_nano=2_000 + i)
            if span_attribute_bytes:
                span.attributes.add(key="blob").value.string_value = "x" * span_attribute_bytes
    return request.SerializeToString()


T1, T2 = "11" * 16, "22" * 16


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


async def make_client(publisher: FakePublisher, *, auto_decompress: bool = False,
                      **config: Any) -> TestClient:
    config.setdefault("token", TOKEN)
    server = TestServer(create_app(publisher, ReceiverConfig(**config)))
    await server.start_server(auto_decompress=auto_decompress)  # `serve` runs with it off
    client = TestClient(server)
    await client.start_server()
    return client


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[TestClient]:
    client = await make_client(publisher, project="fallback")
    yield client
    await client.close()


def auth(headers: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    return {**headers, "Authorization": f"Bearer {token}"}


def pb_status(body: bytes) -> tuple[status_pb2.Status, list[tuple[str, str]]]:
    status = status_pb2.Status.FromString(body)
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        violations += [(v.field, v.description) for v in bad_request.field_violations]
    return status, violations


# -- 200 ------------------------------------------------------------------------------------------

async def test_protobuf_request_is_published_per_trace_and_answered_in_protobuf(
        client: TestClient, publisher: FakePublisher) -> None:
    response = await client.post("/v1/traces", data=request_body({T1: 3, T2: 2}), headers=auth(PROTOBUF))
    assert response.status == 200 and response.content_type == "application/x-protobuf"
    ExportTraceServiceResponse.FromString(await response.read())  # a valid, empty response
    assert [m.key for m in publisher.messages] == [T1.encode(), T2.encode()]
    first, second = publisher.batches()
    assert first.trace_id == T1 and len(first.spans) == 3 and first.final
    assert first.spans[-1].is_root  # the root goes last
    assert {s.project for s in first.spans} == {"fallback"} and first.spans[0].service == "svc"
    assert len(second.spans) == 2


async def test_json_request_is_answered_in_json(client: TestClient, publisher: FakePublisher) -> None:
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": T1, "spanId": "00000000000000aa", "parentSpanId": "00000000000000bb", "name": "child",
        "startTimeUnixNano": "1000", "endTimeUnixNano": "2000"}]}]}]}
    response = await client.post("/v1/traces", data=orjson.dumps(document), headers=auth(JSON))
    assert response.status == 200 and response.content_type == "application/json"
    assert await response.json() == {}
    [batch] = publisher.batches()
    assert not batch.final  # no root in this request: the trace is not over yet
    assert batch.spans[0].name == "child"


async def test_empty_request_succeeds_without_publishing(client: TestClient,
                                                         publisher: FakePublisher) -> None:
    response = await client.post("/v1/traces", data=b"", headers=auth(PROTOBUF))
    assert response.status == 200 and publisher.messages == []


@pytest.mark.parametrize("auto_decompress", [False, True])
async def test_gzip_bodies_are_accepted_under_either_runner_setting(publisher: FakePublisher,
                                                                     auto_decompress: bool) -> None:
    client = await make_client(publisher, auto_decompress=auto_decompress)
    try:
        response = await client.post("/v1/traces", data=gzip.compress(request_body({T1: 2})),
                                     headers=auth(PROTOBUF_GZIP))
        assert response.status == 200
        assert len(publisher.batches()[0].spans) == 2
    finally:
        await client.close()


async def test_answer_waits_for_the_broker_ack(client: TestClient, publisher: FakePublisher) -> None:
    publisher.gate = asyncio.Event()
    pending = asyncio.ensure_future(
        client.post("/v1/traces", data=request_body({T1: 1}), headers=auth(PROTOBUF)))
    await asyncio.sleep(0.2)
    assert not pending.done()
    publisher.gate.set()
    assert (await pending).status == 200


async def test_large_traces_are_split_under_the_message_limit(publisher: FakePublisher) -> None:
    client = await make_client(publisher, max_message_bytes=8 * 1024)
    try:
        response = await client.post("/v1/traces", data=request_body({T1: 40}, span_attribute_bytes=1000),
                                     headers=auth(PROTOBUF))
        assert response.status == 200
    finally:
        await client.close()
    assert len(publisher.messages) > 1
    assert all(len(m.value) <= 8 * 1024 and m.key == T1.encode() for m in publisher.messages)
    batches = publisher.batches()
    assert [b.final for b in batches] == [False] * (len(batches) - 1) + [True]
    assert batches[-1].spans[-1].is_root
    assert len({s.span_id for b in batches for s in b.spans}) == 40


# -- 401 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [PROTOBUF, auth(PROTOBUF, "wrong"), {**PROTOBUF, "Authorization": TOKEN},
                                     {**PROTOBUF, "Authorization": f"Basic {TOKEN}"}])
async def test_missing_or_wrong_token_is_401(client: TestClient, publisher: FakePublisher,
                                             headers: dict[str, str]) -> None:
    response = await client.post("/v1/traces", data=request_body({T1: 1}), headers=headers)
    assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    status, _ = pb_status(await response.read())
    assert "bearer token" in status.message
    assert publisher.messages == []


async def test_no_token_configured_means_no_authentication(publisher: FakePublisher) -> None:
    client = await make_client(publisher, token=None)
    try:
        response = await client.post("/v1/traces", data=request_body({T1: 1}), headers=PROTOBUF)
        assert response.status == 200
    finally:
        await client.close()


# -- 413 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("auto_decompress", [False, True])
async def test_bodies_over_the_limit_are_413_before_and_after_gzip(publisher: FakePublisher,
                                                                   auto_decompress: bool) -> None:
    client = await make_client(publisher, max_request_bytes=4096, auto_decompress=auto_decompress)
    body = request_body({T1: 5}, span_attribute_bytes=2000)
    try:
        plain = await client.post("/v1/traces", data=body, headers=auth(PROTOBUF))
        assert plain.status == 413
        status, _ = pb_status(await plain.read())
        assert "over the limit of 4096 bytes" in status.message

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
            yield body[:3000]
            yield body[3000:]

        streamed = await client.post("/v1/traces", data=chunks(), headers=auth(PROTOBUF))
        assert streamed.status == 413

        bomb = gzip.compress(body)  # small on the wire, too big once inflated
        assert len(bomb) < 4096
        inflated = await client.post("/v1/traces", data=bomb, headers=auth(PROTOBUF_GZIP))
        assert inflated.status == 413
    finally:
        await client.close()
    assert publisher.messages == []


# -- 415 ------------------------------------------------------------------------------------------

async def test_unsupported_content_type_is_415_in_json(client: TestClient) -> None:
    response = await client.post("/v1/traces", data=b"hello", headers=auth({"Content-Type": "text/plain"}))
    assert response.status == 415 and response.content_type == "application/json"
    assert "application/x-protobuf or application/json" in (await response.json())["message"]


async def test_unsupported_content_encoding_is_415(client: TestClient) -> None:
    response = await client.post("/v1/traces", data=b"xx",
                                 headers=auth({**JSON, "Content-Encoding": "deflate"}))
    assert response.status == 415
    assert "Content-Encoding 'deflate'" in (await response.json())["message"]


# -- 400 ------------------------------------------------------------------------------------------

async def test_malformed_protobuf_is_400_with_a_status_naming_the_field(client: TestClient,
                                                                        publisher: FakePublisher) -> None:
    request = ExportTraceServiceRequest.FromString(request_body({T1: 2}))
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b"\x01\x02"
    response = await client.post("/v1/traces", data=request.SerializeToString(), headers=auth(PROTOBUF))
    assert response.status == 400 and response.content_type == "application/x-protobuf"
    status, violations = pb_status(await response.read())
    assert status.message.startswith(
        "resourceSpans[0].scopeSpans[0].spans[1]: traceId must be 32 hex characters")
    assert violations[0][0] == "resourceSpans[0].scopeSpans[0].spans[1].traceId"
    assert publisher.messages == []  # nothing of a rejected request is published


async def test_malformed_json_is_400_in_json(client: TestClient) -> None:
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": T1, "spanId": "00000000000000aa", "name": "", "startTimeUnixNano": 1,
        "endTimeUnixNano": 2}]}]}]}
    response = await client.post("/v1/traces", data=orjson.dumps(document), headers=auth(JSON))
    assert response.status == 400
    body = await response.json()
    assert body["message"] == "resourceSpans[0].scopeSpans[0].spans[0]: name must not be empty"
    assert body["details"][0]["fieldViolations"][0]["field"] == "resourceSpans[0].scopeSpans[0].spans[0].name"


async def test_garbage_and_broken_gzip_are_400(client: TestClient) -> None:
    garbage = await client.post("/v1/traces", data=b"\xff\xfe\xfd", headers=auth(PROTOBUF))
    assert garbage.status == 400
    truncated = gzip.compress(request_body({T1: 1}))[:-6]
    broken = await client.post("/v1/traces", data=truncated, headers=auth(PROTOBUF_GZIP))
    assert broken.status == 400
    status, _ = pb_status(await broken.read())
    assert "gzip" in status.message


async def test_a_span_too_big_for_one_message_is_400(publisher: FakePublisher) -> None:
    client = await make_client(publisher, max_message_bytes=2048, max_value_bytes=1 << 20)
    try:
        response = await client.post("/v1/traces", data=request_body({T1: 1}, span_attribute_bytes=5000),
                                     headers=auth(PROTOBUF))
        assert response.status == 400
        status, _ = pb_status(await response.read())
        assert f"of trace {T1}" in status.message and "2048-byte message limit" in status.message
    finally:
        await client.close()


# -- 503 ------------------------------------------------------------------------------------------

async def test_publish_failure_is_503_with_retry_after_and_nothing_is_counted(
        client: TestClient, publisher: FakePublisher) -> None:
    publisher.error = "broker down"
    response = await client.post("/v1/traces", data=request_body({T1: 2}), headers=auth(PROTOBUF))
    assert response.status == 503 and response.headers["Retry-After"] == "5"
    status, _ = pb_status(await response.read())
    assert "broker down" in status.message
    health = await (await client.get("/health")).json()
    assert health["accepted_spans"] == 0 and health["rejected"]["unavailable"] == 1

    publisher.error = None  # the client retries once the broker is back
    retry = await client.post("/v1/traces", data=request_body({T1: 2}), headers=auth(PROTOBUF))
    assert retry.status == 200 and len(publisher.batches()[0].spans) == 2


# -- /health, routing -----------------------------------------------------------------------------

async def test_health_counts_requests_spans_and_rejections(client: TestClient) -> None:
    await client.post("/v1/traces", data=request_body({T1: 3, T2: 1}), headers=auth(PROTOBUF))
    await client.post("/v1/traces", data=request_body({T1: 1}), headers=PROTOBUF)
    await client.post("/v1/traces", data=b"x", headers=auth({"Content-Type": "text/csv"}))
    await client.post("/v1/traces", data=b"\xff", headers=auth(PROTOBUF))
    health = await (await client.get("/health")).json()
    assert health["status"] == "ok" and health["kafka_producer_started"] is True
    assert (health["requests"], health["accepted_requests"], health["accepted_spans"]) == (4, 1, 4)
    assert health["published_messages"] == 2
    assert health["rejected"] == {"unauthorized": 1, "too_large": 0, "unsupported_media_type": 1,
                                  "bad_request": 1, "unavailable": 0, "internal": 0}


async def test_other_methods_and_paths(client: TestClient) -> None:
    assert (await client.get("/v1/traces")).status == 405
    assert (await client.post("/v1/metrics", data=b"", headers=auth(PROTOBUF))).status == 404


async def test_closing_the_app_closes_the_publisher(publisher: FakePublisher) -> None:
    client = await make_client(publisher)
    await client.close()
    assert publisher.closed
