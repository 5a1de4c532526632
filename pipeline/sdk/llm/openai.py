"""The OpenAI client (`OpenAI`, `AsyncOpenAI` and look-alikes such as `AzureOpenAI`), wrapped in place.

`client.chat.completions` and `client.responses` are created once per client and cached on it, so
replacing their bound `create` with a traced one covers every later call through that client, including
the `.stream()` helpers (which call `create`). Nothing is patched on openai's classes.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from pipeline.sdk.llm.calls import ORIGINAL, Api, traced_async, traced_sync
from pipeline.sdk.llm.inputs import chat_inputs, responses_inputs
from pipeline.sdk.llm.results import from_chat_completion, from_response
from pipeline.sdk.llm.streams import ChatAccumulator, ResponsesAccumulator

if TYPE_CHECKING:
    from pipeline.sdk.tracer import Tracer

CHAT = Api("openai.chat.completions", chat_inputs, from_chat_completion, ChatAccumulator)
RESPONSES = Api("openai.responses", responses_inputs, from_response, ResponsesAccumulator)
RESOURCES: tuple[tuple[tuple[str, ...], Api], ...] = ((("chat", "completions"), CHAT), (("responses",), RESPONSES))


def _resource(client: Any, path: tuple[str, ...]) -> Any:
    obj = client
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj if callable(getattr(obj, "create", None)) else None


def is_openai_client(client: Any) -> bool:
    return any(_resource(client, path) is not None for path, _ in RESOURCES)


def wrap_openai(client: Any, tracer: Tracer | None) -> Any:
    for path, api in RESOURCES:
        resource = _resource(client, path)
        if resource is not None:
            _wrap_create(resource, api, tracer)
    return client


def _wrap_create(resource: Any, api: Api, tracer: Tracer | None) -> None:
    current = resource.create
    original = getattr(current, ORIGINAL, None)
    if original is not None and tracer is None:
        return  # already wrapped; only an explicit tracer rebinds it
    original = original or current
    is_async = inspect.iscoroutinefunction(inspect.unwrap(original))  # openai's `create` sits under a sync decorator
    resource.create = (traced_async if is_async else traced_sync)(original, api, tracer)
