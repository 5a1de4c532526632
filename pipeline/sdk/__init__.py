"""The evalstream SDK: instrument a service without slowing it down.

    tracer = Tracer(project="support-bot")
    client = tracer.wrap(OpenAI())

    @tracer.observe(span_type="tool")
    def search(query: str) -> list[str]: ...

Starting and ending a span builds a small object and appends it to a bounded deque; a background
thread serializes, batches spans per trace and publishes them to Kafka. When the queue is full
spans are dropped and counted, never blocking the caller. Imports only the standard library,
orjson and (lazily, on the background thread) aiokafka.
"""

from pipeline.sdk.capture import CARD_NUMBER, EMAIL, redact_patterns
from pipeline.sdk.config import ENV_VARS, SDKConfig
from pipeline.sdk.context import RemoteParent, bind_context, get_current_span
from pipeline.sdk.exporter import KafkaSpanExporter, SpanExporter
from pipeline.sdk.propagation import continue_trace, extract, inject
from pipeline.sdk.span import NoopSpan, SpanHandle
from pipeline.sdk.tracer import Tracer


def wrap(client: object, tracer: Tracer | None = None) -> object:
    """Auto-track an OpenAI client's or litellm's LLM calls (see `pipeline.sdk.llm`)."""
    from pipeline.sdk.llm import wrap as _wrap

    return _wrap(client, tracer=tracer)


__all__ = [
    "CARD_NUMBER", "EMAIL", "ENV_VARS", "KafkaSpanExporter", "NoopSpan", "RemoteParent", "SDKConfig", "SpanExporter",
    "SpanHandle", "Tracer", "bind_context", "continue_trace", "extract", "get_current_span", "inject", "redact_patterns", "wrap",
]
