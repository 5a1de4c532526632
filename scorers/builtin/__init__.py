"""Built-in code scorers, registered by name."""

from scorers.base import Scorer
from scorers.builtin.error_spans import ErrorSpans
from scorers.builtin.latency import TraceLatency
from scorers.builtin.repeated_tool_calls import RepeatedToolCalls

BUILTINS: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (TraceLatency, ErrorSpans, RepeatedToolCalls)
}

__all__ = ["BUILTINS", "ErrorSpans", "RepeatedToolCalls", "TraceLatency"]
