"""Auto-tracking of LLM calls: `wrap(client)` records each call as a span of type `llm`.

    client = wrap(OpenAI())                 # or AsyncOpenAI(); the same object, its methods wrapped
    llm = wrap(litellm)                     # a proxy: llm.completion / llm.acompletion are traced

Traced: `chat.completions.create` and `responses.create` of OpenAI clients (sync and async, streaming
or not, and the `.stream()` helpers built on them), litellm's `completion` and `acompletion`. Each span
has the request as inputs (model, messages or input/instructions, tools, main parameters), the
assistant message as output, model and token usage via `record_llm`, and `tool_calls` and
`finish_reason` attributes. A stream's span ends when it is exhausted, fails or is closed.

Not traced: `with_raw_response` / `with_streaming_response` calls, `.parse()` helpers, and any other
endpoint (embeddings, legacy completions, litellm's other functions). Clients made afterwards with
`client.with_options(...)` or `copy()` are new objects: wrap them too.

Without an explicit tracer, one is looked up at each call: the current span's, else the Tracer built last
in this context (`context.active_tracer`; a thread started without a copied context sees only the tracer
of its own current span: pass `tracer` or use `bind_context` there). When there is none, or tracing is
off, calls go straight through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.sdk.internal import warn_once
from pipeline.sdk.llm.litellm import TracedLiteLLM, is_litellm, wrap_litellm
from pipeline.sdk.llm.openai import is_openai_client, wrap_openai

if TYPE_CHECKING:
    from pipeline.sdk.tracer import Tracer


def wrap(client: Any, tracer: Tracer | None = None) -> Any:
    """Trace `client`'s LLM calls; returns the client (OpenAI) or a proxy for it (litellm).

    Wrapping again does not add a second span: it is a no-op, or with an explicit `tracer`, rebinds.
    Anything else is returned unchanged, with a warning.
    """
    if isinstance(client, TracedLiteLLM) or is_litellm(client):
        return wrap_litellm(client, tracer)
    if is_openai_client(client):
        return wrap_openai(client, tracer)
    warn_once(f"llm.wrap:{type(client).__qualname__}",
              "evalstream: wrap() supports OpenAI clients and the litellm module, not %r; calls are not traced",
              type(client))
    return client


__all__ = ["wrap"]
