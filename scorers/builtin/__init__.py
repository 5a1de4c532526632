"""Built-in code scorers, registered by name."""

from scorers.base import Scorer
from scorers.builtin.cost import TraceCost
from scorers.builtin.error_spans import ErrorSpans
from scorers.builtin.latency import TraceLatency
from scorers.builtin.outputs import JsonOutput, PiiLeak
from scorers.builtin.repeated_tool_calls import RepeatedToolCalls
from scorers.builtin.tool_errors import ToolErrors

BUILTINS: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (TraceLatency, ErrorSpans, RepeatedToolCalls, ToolErrors, TraceCost, JsonOutput, PiiLeak)
}

__all__ = ["BUILTINS", "ErrorSpans", "JsonOutput", "PiiLeak", "RepeatedToolCalls", "ToolErrors", "TraceCost",
           "TraceLatency"]
