"""The evalstream SDK: instrument a service without slowing it down.

    tracer = Tracer(project="support-bot")

    @tracer.observe(span_type="tool")
    def search(query: str) -> list[str]: ...

Starting and ending a span appends a dict to a bounded deque; a background thread batches
spans per trace and publishes them to Kafka. When the queue is full spans are dropped and
counted, never blocking the caller. Imports only the standard library, orjson and (lazily,
on the background thread) aiokafka.
"""

from pipeline.sdk.tracer import SpanHandle, Tracer

__all__ = ["SpanHandle", "Tracer"]
