"""Built-in scorers, registered by name: code scorers, LLM judges and the judge presets."""

from scorers.base import Scorer
from scorers.builtin.cost import TraceCost
from scorers.builtin.error_spans import ErrorSpans
from scorers.builtin.latency import TraceLatency
from scorers.builtin.outputs import JsonOutput, PiiLeak
from scorers.builtin.repeated_tool_calls import RepeatedToolCalls
from scorers.builtin.sessions import SessionErrors, SessionLength, SessionRepetition
from scorers.builtin.tool_errors import ToolErrors
from scorers.judges import JUDGES

CODE_SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (TraceLatency, ErrorSpans, RepeatedToolCalls, ToolErrors, TraceCost, JsonOutput, PiiLeak,
                              SessionErrors, SessionLength, SessionRepetition)  # the last three: subject: session
}
BUILTINS: dict[str, type[Scorer]] = {**CODE_SCORERS, **JUDGES}

__all__ = ["BUILTINS", "CODE_SCORERS", "ErrorSpans", "JsonOutput", "PiiLeak", "RepeatedToolCalls", "SessionErrors",
           "SessionLength", "SessionRepetition", "ToolErrors", "TraceCost", "TraceLatency"]
