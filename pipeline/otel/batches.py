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

from pipeline.errors import OversizedError


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
        messages.extend(_chunks(trace_id, others + roots, final=bool(roots), max_bytes=max_message_bytes))
    return messages


def _chunks(trace_id: str, encoded: list[bytes], *, final: bool, max_bytes: int) -> list[Message]:
    head = b'{"v":1,"kind":"spans","trace_id":' + orjson.dumps(trace_id) + b',"spans":['
    budget = max_bytes - len(head) - len(b'],"final":false}')
    chunks: list[list[bytes]] = [[]]
    size = 0
    for span in encoded:
        if len(span) > budget:
            span_id = orjson.loads(span).get("span_id")
            raise OversizedError(f"span {span_id} of trace {trace_id} is {len(span)} bytes as JSON, over the "
                                 f"{max_bytes}-byte message limit")
        if chunks[-1] and size + len(span) + 1 > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(span)
        size += len(span) + 1
    last = len(chunks) - 1
    key = trace_id.encode()
    return [Message(trace_id, key, head + b",".join(chunk) + (b'],"final":true}' if final and i == last
                                                              else b'],"final":false}'),
                    len(chunk), final and i == last)
            for i, chunk in enumerate(chunks)]
