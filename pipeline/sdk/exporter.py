"""Getting spans off the caller's thread: a bounded deque drained by one background thread that
serializes, groups spans per trace and publishes them to Kafka with aiokafka.

The caller's side (`emit`) is a length check and an append: it never blocks, never raises, and when
the queue is full the span is dropped and counted. While the broker is unreachable the thread keeps
retrying with backoff and the queue stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from pipeline.contracts.batches import encode_span_batches
from pipeline.contracts.codec import pack_items
from pipeline.errors import OversizedError
from pipeline.sdk.internal import warn_once
from pipeline.topics import SPANS

log = logging.getLogger("evalstream.sdk")

MAX_MESSAGE_BYTES = 1024 * 1024  # well under the broker's limit; a bigger trace goes in several messages
_DRAIN_CHUNK = 20_000


class Exportable(Protocol):
    def to_wire(self) -> tuple[dict[str, Any], bool]:
        """The wire span and whether it ends its trace."""


class SpanExporter(Protocol):
    def emit(self, item: Exportable) -> None: ...
    def flush(self, timeout_s: float = 10.0) -> bool: ...
    def shutdown(self, timeout_s: float = 10.0) -> None: ...
    def stats(self) -> dict[str, int]: ...


class PreparedSpan:
    """A span already in wire form (from the OpenTelemetry exporter)."""

    __slots__ = ("ends_trace", "span")

    def __init__(self, span: dict[str, Any], ends_trace: bool) -> None:
        self.span = span
        self.ends_trace = ends_trace

    def to_wire(self) -> tuple[dict[str, Any], bool]:
        return self.span, self.ends_trace


class KafkaSpanExporter:
    def __init__(self, bootstrap_servers: str, *, max_queue_size: int = 100_000, flush_interval_s: float = 0.1,
                 topic: str = SPANS, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 kafka_options: Mapping[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap_servers
        self._kafka_options = dict(kafka_options or {})
        self._max = max_queue_size
        self._interval = flush_interval_s
        self._topic = topic
        self._max_message_bytes = max_message_bytes
        self.sent = 0
        self.dropped = 0  # queue full
        self.failed = 0  # could not be serialized or published
        self._reset_thread_state()
        _live_exporters.add(self)

    def _reset_thread_state(self) -> None:
        self._queue: deque[Exportable] = deque()
        self._wake = threading.Event()
        self._async_wake: asyncio.Event | None = None
        self._wake_loop: asyncio.AbstractEventLoop | None = None
        self._flushed = threading.Condition()
        self._generation = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    # -- caller's thread --------------------------------------------------------------------------
    def emit(self, item: Exportable) -> None:
        if len(self._queue) >= self._max:
            self.dropped += 1
            return
        self._queue.append(item)
        if self._thread is None:
            self._start()

    def emit_wire(self, span: dict[str, Any], ends_trace: bool) -> None:
        """Queue an already-mapped wire span (a `pipeline.contracts.Span` as a dict)."""
        self.emit(PreparedSpan(span, ends_trace))

    def stats(self) -> dict[str, int]:
        return {"queued": len(self._queue), "sent": self.sent, "dropped": self.dropped, "failed": self.failed}

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Publish everything queued before this call; True if that finished within the timeout."""
        if self._thread is None:
            return not self._queue
        with self._flushed:
            target = self._generation + 2  # a whole pass that began after this call
            self._wake_up()
            passed = self._flushed.wait_for(lambda: self._generation >= target, timeout=timeout_s)
        return passed and not self._queue and self._thread is not None and self._thread.is_alive()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        if self._thread is None or self._stopping:
            return
        self._stopping = True
        self._wake_up()
        self._thread.join(timeout_s)
        if self._queue:
            lost = len(self._queue)
            self.failed += lost
            self._queue.clear()
            log.warning("evalstream: %d spans were not published before shutdown (broker %s)", lost, self._bootstrap)

    def _wake_up(self) -> None:
        self._wake.set()
        loop, event = self._wake_loop, self._async_wake
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(event.set)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="evalstream-exporter", daemon=True)
                self._thread.start()

    # -- background thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._loop())
        except Exception:
            log.exception("evalstream exporter thread stopped")
        finally:
            with self._flushed:
                self._generation += 10**9  # wake every flush() waiter: nothing more will be published
                self._flushed.notify_all()

    async def _loop(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer: Any = None
        backoff = 0.5
        next_attempt = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if producer is None and loop.time() >= next_attempt:
                candidate = AIOKafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=5,
                                             max_request_size=self._max_message_bytes + 64 * 1024,
                                             max_batch_size=self._max_message_bytes + 16 * 1024,
                                             request_timeout_ms=10_000, acks=1, **self._kafka_options)
                try:
                    await candidate.start()
                    producer, backoff = candidate, 0.5
                except Exception as exc:  # noqa: BLE001 - unreachable broker: keep spans, retry later
                    await _quiet_stop(candidate)
                    warn_once(f"connect:{self._bootstrap}", "evalstream: cannot reach Kafka at %s (%s); spans wait "
                              "in a bounded queue and are dropped and counted when it is full",
                              self._bootstrap, exc)
                    next_attempt = loop.time() + backoff
                    backoff = min(backoff * 2, 10.0)
            if producer is not None:
                await self._drain(producer)
            with self._flushed:
                self._generation += 1
                self._flushed.notify_all()
            if self._stopping:
                break
            # Polled, not woken per span: waking costs the caller; flush() and shutdown() do wake it.
            self._async_wake = asyncio.Event()
            self._wake_loop = loop
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._async_wake.wait(), self._interval)
            self._wake.clear()
        if producer is not None:
            await _quiet_stop(producer)

    async def _drain(self, producer: Any) -> None:
        while self._queue:
            by_trace: dict[str, tuple[list[bytes], list[bool]]] = {}
            for _ in range(min(len(self._queue), _DRAIN_CHUNK)):
                item = self._queue.popleft()
                try:
                    span, ends_trace = item.to_wire()
                    encoded = orjson.dumps(span, default=str)
                except Exception as exc:
                    self.failed += 1
                    log.error("evalstream: could not serialize a span (%r); it is dropped", exc, exc_info=exc)
                    continue
                entry = by_trace.setdefault(span["trace_id"], ([], [False]))
                entry[0].append(encoded)
                entry[1][0] = entry[1][0] or ends_trace
            await self._publish(producer, by_trace)

    async def _publish(self, producer: Any, by_trace: dict[str, tuple[list[bytes], list[bool]]]) -> None:
        """One aiokafka batch per partition (per-message send() costs ~50 us; a batch append ~2 us), whose
        messages are SpanBundles: the SpanBatches of many traces, so the assembler handles one event for
        them. Partitions are chosen like Kafka's default partitioner, so a trace stays on one partition."""
        from aiokafka.partitioner import murmur2

        partitions = sorted(await producer.partitions_for(self._topic))
        per_partition: dict[int, list[tuple[bytes, bytes, int]]] = {}
        for trace_id, (spans, final) in by_trace.items():
            key = trace_id.encode()
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            try:
                payloads = encode_span_batches(trace_id, spans, final=final[0], max_bytes=self._max_message_bytes)
            except OversizedError as exc:  # a span alone over the message limit: this trace's flush is lost, not others
                self.failed += len(spans)
                warn_once("oversized", "evalstream: dropping trace %s: %s", trace_id, exc)
                continue
            for payload, count in payloads:
                per_partition.setdefault(partition, []).append((key, payload, count))
        by_partition: dict[int, list[tuple[bytes, bytes, int]]] = {}
        for partition, items in per_partition.items():
            payloads = [payload for _, payload, _ in items]
            packed = list(pack_items("batches", payloads, self._max_message_bytes, kind="span_bundle"))
            ends = [first for _, first in packed[1:]] + [len(items)]
            for (bundle, lo), hi in zip(packed, ends, strict=True):
                value = payloads[lo] if hi - lo == 1 else bundle  # a lone trace goes as its plain SpanBatch
                by_partition.setdefault(partition, []).append(
                    (items[lo][0], value, sum(count for _, _, count in items[lo:hi])))
        sends: list[tuple[int, Any]] = []
        for partition, messages in by_partition.items():
            batch, counted = producer.create_batch(), 0
            for key, payload, count in messages:
                if batch.append(key=key, value=payload, timestamp=None) is None:
                    sends.append((counted, self._send_batch(producer, batch, partition)))
                    batch, counted = producer.create_batch(), 0
                    batch.append(key=key, value=payload, timestamp=None)
                counted += count
            sends.append((counted, self._send_batch(producer, batch, partition)))
        results = await asyncio.gather(*(send for _, send in sends), return_exceptions=True)
        for (count, _), result in zip(sends, results, strict=True):
            if isinstance(result, BaseException):
                self.failed += count
                warn_once(f"publish:{self._bootstrap}", "evalstream: publishing spans to %s at %s failed (%r); "
                          "they are counted as failed", self._topic, self._bootstrap, result)
            else:
                self.sent += count

    async def _send_batch(self, producer: Any, batch: Any, partition: int) -> Any:
        delivery = await producer.send_batch(batch, self._topic, partition=partition)
        return await delivery

    def _after_fork_in_child(self) -> None:
        # The parent's thread and queue do not exist in the child; start over lazily.
        self._reset_thread_state()


async def _quiet_stop(producer: Any) -> None:
    try:
        await producer.stop()
    except Exception:  # noqa: BLE001, S110 - closing a connection that never worked is not news
        pass


_live_exporters: weakref.WeakSet[KafkaSpanExporter] = weakref.WeakSet()


def _after_fork() -> None:
    for exporter in list(_live_exporters):
        exporter._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
