"""What an LLM call produced, read from a response object (openai or litellm, or a plain dict) and
written onto its span. Field access is duck-typed so neither library has to be importable here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.sdk.span import SpanHandle


class LLMResponseError(Exception):
    """A response that reports a failure without the client raising (a failed Responses API stream)."""


@dataclass
class ToolCall:
    id: str | None
    name: str | None
    arguments: str | None
    type: str = "function"

    def as_message_part(self) -> dict[str, Any]:
        """The call as it appears in an assistant message (and can be sent back in `messages`)."""
        if self.type == "custom":
            return {"id": self.id, "type": "custom", "custom": {"name": self.name, "input": self.arguments}}
        return {"id": self.id, "type": self.type, "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class LLMResult:
    model: str | None = None
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    items: list[Any] = field(default_factory=list)  # responses: output items that are neither text nor calls
    error: str | None = None
    incomplete: bool = False  # a stream closed or dropped before its end


def get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def tool_call(call: Any) -> ToolCall:
    kind = get(call, "type") or "function"
    body = get(call, kind) or get(call, "function")
    arguments = get(body, "arguments")
    return ToolCall(get(call, "id"), get(body, "name"), get(body, "input") if arguments is None else arguments,
                    kind)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def hidden_cost(response: Any) -> float | None:
    """litellm's own price for the call, when it computed one."""
    hidden = getattr(response, "_hidden_params", None)
    return _number(hidden.get("response_cost")) if isinstance(hidden, dict) else None


def usage_cost(usage: Any) -> float | None:
    """A price sent along with the usage (litellm's streamed usage, some OpenAI-compatible gateways)."""
    return _number(get(usage, "cost"))


def from_chat_completion(response: Any) -> LLMResult:
    """A chat completion (openai `ChatCompletion`, litellm `ModelResponse`): its first choice."""
    choices = get(response, "choices") or []
    choice = choices[0] if choices else None
    message = get(choice, "message")
    usage = get(response, "usage")
    return LLMResult(
        model=get(response, "model"),
        content=get(message, "content"),
        tool_calls=[tool_call(c) for c in get(message, "tool_calls") or []],
        finish_reason=get(choice, "finish_reason"),
        input_tokens=get(usage, "prompt_tokens"),
        output_tokens=get(usage, "completion_tokens"),
        cost_usd=hidden_cost(response) or usage_cost(usage),
    )


def from_response(response: Any) -> LLMResult:
    """A Responses API `Response`: output text, function calls, and any other output items as they are."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    others: list[Any] = []
    for item in get(response, "output") or []:
        kind = get(item, "type")
        if kind == "message":
            texts.extend(get(part, "text") or "" for part in get(item, "content") or []
                         if get(part, "type") == "output_text")
        elif kind == "function_call":
            calls.append(ToolCall(get(item, "call_id"), get(item, "name"), get(item, "arguments")))
        elif kind == "custom_tool_call":
            calls.append(ToolCall(get(item, "call_id"), get(item, "name"), get(item, "input"), "custom"))
        else:
            others.append(item)
    usage = get(response, "usage")
    status = get(response, "status")
    error = get(response, "error")
    return LLMResult(
        model=get(response, "model"),
        content="".join(texts) if texts else None,
        tool_calls=calls,
        finish_reason=get(get(response, "incomplete_details"), "reason") or status,
        input_tokens=get(usage, "input_tokens"),
        output_tokens=get(usage, "output_tokens"),
        cost_usd=hidden_cost(response),
        items=others,
        error=(get(error, "message") or "response failed") if status == "failed" else None,
    )


def record(span: SpanHandle, result: LLMResult, requested_model: Any, capture_io: bool) -> None:
    if capture_io:
        output: dict[str, Any] = {"role": "assistant", "content": result.content}
        if result.tool_calls:
            output["tool_calls"] = [c.as_message_part() for c in result.tool_calls]
        if result.items:
            output["items"] = result.items
        span.set_output(output)
    span.record_llm(model=result.model or (requested_model if isinstance(requested_model, str) else None),
                    input_tokens=result.input_tokens, output_tokens=result.output_tokens, cost_usd=result.cost_usd)
    if result.tool_calls:
        span.set_attribute("tool_calls", [
            {"id": c.id, "name": c.name, "arguments": c.arguments} if capture_io else {"id": c.id, "name": c.name}
            for c in result.tool_calls])
    if result.finish_reason:
        span.set_attribute("finish_reason", result.finish_reason)
    if result.incomplete:
        span.set_attribute("stream_incomplete", True)
    if result.error is not None:
        span.record_error(LLMResponseError(result.error))
