"""Traces -> BackfillBatch messages on `evalstream.backfill.v1`, many traces per message.

Each trace is encoded once and spliced into its message, which stays under the size limit. Keys
differ per message, so the messages spread over the partitions and the routers share them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline import topics
from pipeline.errors import PublishError

MAX_TRACES_PER_MESSAGE = 250
TARGET_MESSAGE_BYTES = 1024 * 1024


@dataclass
class Packed:
    messages: list[bytes] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # traces per message
    oversized: list[str] = field(default_factory=list)  # trace ids too large for any message


def pack(backfill_id: str, rules: list[str], traces: list[dict[str, Any]], max_bytes: int,
         target_bytes: int = TARGET_MESSAGE_BYTES, max_traces: int = MAX_TRACES_PER_MESSAGE) -> Packed:
    """Messages of up to `max_traces` traces and about `target_bytes`; a larger trace travels alone, and
    one that cannot fit `max_bytes` (the routers' limit) is left out and named."""
    head = orjson.dumps({"v": 1, "kind": "backfill", "backfill_id": backfill_id, "rules": rules,
                         "sent_at_ns": time.time_ns()})[:-1] + b',"traces":['
    room = max_bytes - len(head) - 2
    out = Packed()
    parts: list[bytes] = []
    size = 0

    def close() -> None:
        nonlocal parts, size
        if parts:
            out.messages.append(head + b",".join(parts) + b"]}")
            out.counts.append(len(parts))
        parts, size = [], 0

    for trace in traces:
        encoded = orjson.dumps(trace)
        if len(encoded) > room:
            out.oversized.append(trace["trace_id"])
            continue
        if parts and (size + len(encoded) + 1 > min(room, target_bytes) or len(parts) >= max_traces):
            close()
        parts.append(encoded)
        size += len(encoded) + 1
    close()
    return out


class BackfillPublisher:
    """An aiokafka producer; `send` returns once the broker acknowledged every message."""

    def __init__(self, bootstrap: str, max_message_bytes: int, client_options: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.max_message_bytes = max_message_bytes
        self.client_options = client_options or {}  # TLS / SASL keyword arguments for aiokafka
        self._producer: Any = None
        self._sequence = 0

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                          max_request_size=self.max_message_bytes + 64 * 1024,
                                          request_timeout_ms=60000, **self.client_options)
        try:
            await self._producer.start()
        except Exception as exc:
            await self._producer.stop()
            raise PublishError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc

    async def send(self, backfill_id: str, messages: list[bytes]) -> None:
        try:
            pending = []
            for value in messages:
                self._sequence += 1
                key = f"{backfill_id}:{time.time_ns()}:{self._sequence}".encode()
                pending.append(await self._producer.send(topics.BACKFILL, value, key=key))
            await asyncio.gather(*pending)
        except Exception as exc:
            raise PublishError(f"the broker did not acknowledge backfill messages on {topics.BACKFILL}: "
                               f"{type(exc).__name__}: {exc}") from exc

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
