"""What an LLM call asked for, as span inputs: the model, the prompt and the main sampling parameters.

Only named keys are copied, so credentials passed as arguments (litellm's `api_key`) never reach a span.
"""

from __future__ import annotations

from typing import Any

PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "max_output_tokens", "stop", "seed", "n",
          "presence_penalty", "frequency_penalty", "response_format", "reasoning_effort", "reasoning", "text",
          "parallel_tool_calls", "previous_response_id", "stream")


def given(value: Any) -> bool:
    # openai's helpers (`.stream()`) pass every parameter, the unset ones as `omit` / `NOT_GIVEN` sentinels.
    return value is not None and type(value).__name__ not in ("Omit", "NotGiven")


def _snapshot(value: Any) -> Any:
    # Spans are serialized later, on the exporter's thread; agent loops append to `messages` right after
    # the call, so keep the list as it was. Only lists/tuples: an arbitrary iterable must not be consumed.
    return list(value) if isinstance(value, list | tuple) else value


def _build(request: dict[str, Any], prompt_keys: tuple[str, ...], capture_io: bool) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    keys = (("model",) + prompt_keys + ("tools", "tool_choice") if capture_io else ("model",)) + PARAMS
    for key in keys:
        value = request.get(key)
        if given(value):
            inputs[key] = _snapshot(value)
    return inputs


def chat_inputs(request: dict[str, Any], capture_io: bool) -> dict[str, Any]:
    return _build(request, ("messages",), capture_io)


def responses_inputs(request: dict[str, Any], capture_io: bool) -> dict[str, Any]:
    return _build(request, ("instructions", "input"), capture_io)
