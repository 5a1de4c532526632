"""Background publishing: a bounded deque drained by a thread running its own asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict, deque
from typing import Any

import orjson

from pipeline.topics import SPANS

log = logging.getLogger("evalstream.sdk")


class KafkaSpanExporter:
    def __init__(self, bootstrap_servers: str, *, max_queue_size: int = 100_000, flush_interval_s: float = 0.1,
                 topic: str = SPANS) -> None:
        self._bootstrap = bootstrap_servers
        self._queue: deque[tuple[dict[str, Any], bool]] = deque()
        self._max = max_queue_size
        self._interval = flush_interval_s
        self._topic = topic
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._wake = threading.Event()
        self._flushed = threading.Condition()
        self._generation = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._warned = False

    def emit(self, span: dict[str, Any], root_ended: bool) -> None:
        """Called on the caller's thread: never blocks, never raises."""
        if len(self._queue) >= self._max:
            self.dropped += 1
            return
        self._queue.append((span, root_ended))
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="evalstream-exporter", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=5, max_request_size=8 * 1024 * 1024,
                                    request_timeout_ms=10000)
        started = False
        while True:
            if not started:
                try:
                    await producer.start()
                    started = True
                except Exception as exc:
                    self._warn(f"cannot reach Kafka at {self._bootstrap}: {exc}")
            if started:
                await self._drain(producer)
            else:
                self._drop_all()
            with self._flushed:
                self._generation += 1
                self._flushed.notify_all()
            if self._stopping:
                break
            await asyncio.get_running_loop().run_in_executor(None, self._wake.wait, self._interval)
            self._wake.clear()
        if started:
            await producer.stop()

    async def _drain(self, producer: Any) -> None:
        while self._queue:
            by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
            final: set[str] = set()
            for _ in range(min(len(self._queue), 50_000)):
                span, root_ended = self._queue.popleft()
                by_trace[span["trace_id"]].append(span)
                if root_ended:
                    final.add(span["trace_id"])
            futures = []
            for trace_id, spans in by_trace.items():
                payload = orjson.dumps({"v": 1, "kind": "spans", "trace_id": trace_id, "spans": spans,
                                        "final": trace_id in final}, default=str)
                try:
                    futures.append((len(spans), await producer.send(self._topic, payload, key=trace_id.encode())))
                except Exception as exc:
                    self.failed += len(spans)
                    self._warn(f"publishing spans failed: {exc}")
            for count, future in futures:
                try:
                    await future
                    self.sent += count
                except Exception as exc:
                    self.failed += count
                    self._warn(f"publishing spans failed: {exc}")

    def _drop_all(self) -> None:
        while self._queue:
            self._queue.popleft()
            self.failed += 1

    def _warn(self, message: str) -> None:
        if not self._warned:
            log.warning("evalstream: %s (spans are dropped and counted; further errors are not logged)", message)
            self._warned = True

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Publish everything queued so far; True if it finished within the timeout."""
        if self._thread is None:
            return True
        with self._flushed:
            target = self._generation + 2  # a full pass that started after this call
            self._wake.set()
            return self._flushed.wait_for(lambda: self._generation >= target, timeout=timeout_s)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
