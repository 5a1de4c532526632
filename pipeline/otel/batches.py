"""Wire spans -> SpanBatch messages for the spans topic: one or more per trace, keyed by trace id,
each at most `max_message_bytes`.

A trace's batch is `final` when it holds the trace's root. When a trace needs several messages,
roots go last and only the last message is final, so the assembler has every span before it
closes the trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.contracts.batches import encode_span_batches


@dataclass(frozen=True, slots=True)
class Message:
    trace_id: str
    key: bytes
    value: bytes
    spans: int
    final: bool


def span_batches(spans: Iterable[dict[str, Any]], max_message_bytes: int) -> list[Message]:
    by_trace: dict[str, tuple[list[bytes], list[bytes]]] = {}
    for span in spans:
        others, roots = by_trace.setdefault(span["trace_id"], ([], []))
        (others if span.get("parent_span_id") else roots).append(orjson.dumps(span))
    messages: list[Message] = []
    for trace_id, (others, roots) in by_trace.items():
        payloads = encode_span_batches(trace_id, others + roots, final=bool(roots), max_bytes=max_message_bytes)
        last = len(payloads) - 1
        messages += [Message(trace_id, trace_id.encode(), value, count, bool(roots) and i == last)
                     for i, (value, count) in enumerate(payloads)]
    return messages
