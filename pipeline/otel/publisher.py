"""Publishing SpanBatch messages and waiting until the broker has acknowledged every one of them.

The OTLP receiver answers 200 only after `publish` returned, so a span it accepted is in Kafka.
`Publisher` is the interface the receiver needs; tests inject a fake.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pipeline.errors import PublishError
from pipeline.otel.batches import Message
from pipeline.topics import SPANS

log = logging.getLogger(__name__)


class Publisher(Protocol):
    async def publish(self, messages: Sequence[Message]) -> None:
        """Return once every message is acknowledged; raise PublishError if any is not."""

    @property
    def started(self) -> bool:
        """Whether a producer is running (not whether the broker is reachable right now)."""


    async def close(self) -> None: ...


class KafkaPublisher:
    """An aiokafka producer (acks=all), connected on first use and reconnected after a failed start."""

    def __init__(self, bootstrap_servers: str, *, max_message_bytes: int, topic: str = SPANS,
                 timeout_s: float = 8.0, reconnect_interval_s: float = 1.0,
                 client_options: Mapping[str, Any] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._client_options = dict(client_options or {})  # TLS / SASL: kafka_security.aiokafka_options
        self.topic = topic
        self._max_message_bytes = max_message_bytes
        self._timeout_s = timeout_s
        self._reconnect_interval_s = reconnect_interval_s
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._next_attempt = 0.0
        self._last_error: BaseException | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect now rather than on the first request; a broker that is down is logged, not fatal."""
        try:
            await self._ensure_producer()
        except PublishError:
            pass

    async def _ensure_producer(self) -> Any:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            loop = asyncio.get_running_loop()
            if loop.time() < self._next_attempt:  # do not hammer a broker that is down on every request
                raise PublishError(f"Kafka at {self.bootstrap_servers} is unreachable: {self._last_error!r}")
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=2,
                                        max_request_size=self._max_message_bytes + 64 * 1024,
                                        request_timeout_ms=int(self._timeout_s * 1000), **self._client_options)
            try:
                await asyncio.wait_for(producer.start(), self._timeout_s)
            except Exception as exc:  # any failure to connect means: answer 503, try again later
                await _quiet_stop(producer)
                self._last_error = exc
                self._next_attempt = loop.time() + self._reconnect_interval_s
                log.error("cannot connect to Kafka at %s: %r", self.bootstrap_servers, exc)
                raise PublishError(f"Kafka at {self.bootstrap_servers} is unreachable: {exc!r}") from exc
            self._producer = producer
            return producer

    async def publish(self, messages: Sequence[Message]) -> None:
        producer = await self._ensure_producer()
        try:
            async with asyncio.timeout(self._timeout_s):
                # send() waits for room in the producer's buffer and returns the delivery future.
                deliveries = [await producer.send(self.topic, m.value, key=m.key) for m in messages]
                outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        except TimeoutError:
            log.error("publishing %d span batches to %s timed out after %gs (first trace %s)", len(messages),
                      self.topic, self._timeout_s, messages[0].trace_id)
            raise PublishError(f"Kafka did not acknowledge within {self._timeout_s:g}s") from None
        except Exception as exc:  # aiokafka raises many types; every one means: answer 503
            log.error("publishing span batches to %s failed (first trace %s): %r", self.topic,
                      messages[0].trace_id, exc)
            raise PublishError(f"publishing to Kafka failed: {exc!r}") from exc
        failed = [(m, o) for m, o in zip(messages, outcomes, strict=True) if isinstance(o, BaseException)]
        if failed:
            message, error = failed[0]
            log.error("%d of %d span batches were not acknowledged by %s at %s (first: trace %s, %r)",
                      len(failed), len(messages), self.topic, self.bootstrap_servers, message.trace_id, error)
            raise PublishError(
                f"{len(failed)} of {len(messages)} span batches were not acknowledged: {error!r}")

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quiet_stop(producer)


async def _quiet_stop(producer: Any) -> None:
    try:
        await producer.stop()
    except Exception:  # noqa: BLE001, S110 - closing a connection that never worked is not news
        pass
