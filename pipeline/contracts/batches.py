"""SpanBatch payloads from spans already encoded as JSON: the one encoder every sender uses (our SDK's
exporter, the OpenTelemetry exporter and the OTLP receiver). Encoding each span once and joining bytes is
what keeps the senders cheap; the result is a plain `SpanBatch` (contracts/spans.py)."""

from __future__ import annotations

import orjson

from pipeline.errors import OversizedError

_TAIL = len(b',"final":false,"spans":[]}')


def encode_span_batches(trace_id: str, spans: list[bytes], *, final: bool,
                        max_bytes: int) -> list[tuple[bytes, int]]:
    """SpanBatch messages for one trace, each at most `max_bytes`, with how many spans each holds. Spans keep
    their order and only the last message carries `final`, so the pipeline has every span before it may close
    the trace (put the root last). A span that alone is over the limit raises OversizedError."""
    head = b'{"v":1,"kind":"spans","trace_id":' + orjson.dumps(trace_id)
    budget = max_bytes - len(head) - _TAIL
    chunks: list[list[bytes]] = [[]]
    size = 0
    for span in spans:
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
    return [(head + (b',"final":true' if final and i == last else b',"final":false') + b',"spans":['
             + b",".join(chunk) + b"]}", len(chunk)) for i, chunk in enumerate(chunks)]
