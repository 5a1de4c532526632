"""The OTLP/HTTP trace receiver: `POST /v1/traces` -> SpanBatch messages on the spans topic.

A request is answered 200 only after the broker acknowledged every message made from it, so an
accepted span is never lost; if publishing fails the answer is 503 with Retry-After and the OTLP
client retries (the assembler counts a span id once, so a retry that repeats spans is harmless).
Failures answer with a google.rpc.Status in the request's encoding, as OTLP/HTTP requires:

    401 missing or wrong bearer token           413 body over the limit (before or after gzip)
    415 content type or encoding not supported   400 malformed request (never retried by clients)
    503 Kafka did not acknowledge (retried)       500 a bug here
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from pipeline.errors import DecodeError, OtlpDecodeError, PublishError
from pipeline.otel.batches import Message, span_batches
from pipeline.otel.mapping import DEFAULT_MAX_VALUE_BYTES, to_wire_span
from pipeline.otel.otlp import (
    INTERNAL,
    INVALID_ARGUMENT,
    UNAUTHENTICATED,
    UNAVAILABLE,
    Encoding,
    decode_traces,
    encoding_for,
    status_body,
    success_body,
)
from pipeline.otel.publisher import Publisher

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class ReceiverConfig:
    project: str = "default"  # for spans that carry no evalstream.project
    token: str | None = None  # None: no authentication
    max_request_bytes: int = 20 * 1024 * 1024  # the OTLP spec's recommended default
    max_message_bytes: int = 8 * 1024 * 1024
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    retry_after_s: int = 5


@dataclass
class ReceiverStats:
    requests: int = 0
    accepted_requests: int = 0
    accepted_spans: int = 0
    published_messages: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("unauthorized", "too_large", "unsupported_media_type", "bad_request", "unavailable", "internal"), 0))


class _TooLarge(Exception):
    pass


class Receiver:
    def __init__(self, publisher: Publisher, config: ReceiverConfig) -> None:
        self.publisher = publisher
        self.config = config
        self.stats = ReceiverStats()
        self._token = config.token.encode() if config.token else None

    # -- handlers ---------------------------------------------------------------------------------
    async def traces(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        encoding = encoding_for(request.headers.get("Content-Type", ""))
        reply = encoding or Encoding.JSON
        if not self._authorized(request):
            log.warning("OTLP request from %s rejected: missing or wrong bearer token", request.remote)
            return self._reject(reply, 401, "unauthorized", UNAUTHENTICATED, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": 'Bearer realm="evalstream"'})
        if encoding is None:
            return self._reject(reply, 415, "unsupported_media_type", INVALID_ARGUMENT,
                                f"Content-Type {request.headers.get('Content-Type', '')!r} is not supported: "
                                "send application/x-protobuf or application/json")
        content_encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if content_encoding not in ("identity", "", "gzip", "x-gzip"):
            return self._reject(reply, 415, "unsupported_media_type", INVALID_ARGUMENT,
                                f"Content-Encoding {content_encoding!r} is not supported: send gzip or none")
        try:
            body = await self._read_body(request, gzipped=content_encoding in ("gzip", "x-gzip"))
            loop = asyncio.get_running_loop()
            messages, spans = await loop.run_in_executor(None, self._prepare, body, encoding)
        except _TooLarge:
            return self._reject(reply, 413, "too_large", INVALID_ARGUMENT,
                                f"request body is over the limit of {self.config.max_request_bytes} bytes "
                                "(before or after gunzip); send smaller batches")
        except DecodeError as exc:
            log.warning("OTLP request from %s rejected: %s", request.remote, exc)
            violations = [(exc.field_path, exc.problem)] if isinstance(exc, OtlpDecodeError) else None
            return self._reject(reply, 400, "bad_request", INVALID_ARGUMENT, str(exc), violations=violations)
        except Exception:
            log.exception("OTLP request from %s could not be processed", request.remote)
            return self._reject(reply, 500, "internal", INTERNAL, "internal error while mapping spans")
        if messages:
            try:
                await self.publisher.publish(messages)
            except PublishError as exc:
                return self._reject(reply, 503, "unavailable", UNAVAILABLE, f"spans were not accepted: {exc}",
                                    headers={"Retry-After": str(self.config.retry_after_s)})
        self.stats.accepted_requests += 1
        self.stats.accepted_spans += spans
        self.stats.published_messages += len(messages)
        return web.Response(body=success_body(encoding), content_type=encoding.value)

    async def health(self, request: web.Request) -> web.Response:
        stats = self.stats
        return web.json_response({
            "status": "ok", "kafka_producer_started": self.publisher.started, "requests": stats.requests,
            "accepted_requests": stats.accepted_requests, "accepted_spans": stats.accepted_spans,
            "published_messages": stats.published_messages, "rejected": stats.rejected,
        })

    # -- steps ------------------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token)

    async def _read_body(self, request: web.Request, *, gzipped: bool) -> bytes:
        limit = self.config.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                chunks.append(chunk)
        except RequestPayloadError as exc:  # aiohttp could not inflate a body it decompresses itself
            raise OtlpDecodeError("", f"request body could not be decoded: {exc.__cause__ or exc}") from None
        body = b"".join(chunks)
        # `serve` turns aiohttp's automatic decompression off so that the limit applies to the inflated
        # size; under a runner that leaves it on, the body arrives already inflated (no gzip magic).
        if gzipped and body.startswith(_GZIP_MAGIC):
            body = gunzip(body, limit)
        return body

    def _prepare(self, body: bytes, encoding: Encoding) -> tuple[list[Message], int]:
        """Decode, map and batch (on an executor thread: a 20 MiB request takes a while)."""
        spans = decode_traces(body, encoding)
        wire = [to_wire_span(span, self.config.project, max_value_bytes=self.config.max_value_bytes)
                for span in spans]
        return span_batches(wire, self.config.max_message_bytes), len(wire)

    def _reject(self, encoding: Encoding, http_status: int, reason: str, code: int, message: str, *,
                headers: dict[str, str] | None = None,
                violations: list[tuple[str, str]] | None = None) -> web.Response:
        self.stats.rejected[reason] += 1
        return web.Response(status=http_status, body=status_body(encoding, code, message, violations),
                            content_type=encoding.value, headers=headers)


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate a (possibly multi-member) gzip body, refusing to produce more than `limit` bytes."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise OtlpDecodeError("", f"request body is not valid gzip ({exc})") from None
        if len(out) > limit:
            raise _TooLarge
        if not inflater.eof:
            raise OtlpDecodeError("", "request body is truncated gzip")
        data = inflater.unused_data
    return bytes(out)


RECEIVER = web.AppKey("receiver", Receiver)


def create_app(publisher: Publisher, config: ReceiverConfig) -> web.Application:
    receiver = Receiver(publisher, config)
    app = web.Application()
    app[RECEIVER] = receiver
    app.router.add_post(TRACES_PATH, receiver.traces)
    app.router.add_get("/health", receiver.health)

    async def close_publisher(_: web.Application) -> None:
        await publisher.close()

    app.on_cleanup.append(close_publisher)
    return app


async def serve(app: web.Application, host: str, port: int, on_ready: Callable[[str], Any]) -> None:
    """Serve until SIGINT or SIGTERM, then finish in-flight requests and close the publisher."""
    runner = web.AppRunner(app, auto_decompress=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1] if runner.addresses else port
        on_ready(f"http://{host}:{bound_port}{TRACES_PATH}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
