"""litellm, wrapped as a proxy: `completion` and `acompletion` are traced, everything else is the module's.

The litellm module itself is left alone (other code in the process may use it untraced).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from pipeline.sdk.llm.calls import Api, traced_async, traced_sync
from pipeline.sdk.llm.inputs import chat_inputs
from pipeline.sdk.llm.results import from_chat_completion
from pipeline.sdk.llm.streams import ChatAccumulator

if TYPE_CHECKING:
    from pipeline.sdk.tracer import Tracer

COMPLETION = Api("litellm.completion", chat_inputs, from_chat_completion, ChatAccumulator, ("model", "messages"))
ACOMPLETION = Api("litellm.acompletion", chat_inputs, from_chat_completion, ChatAccumulator, ("model", "messages"))


def is_litellm(client: Any) -> bool:
    return isinstance(client, ModuleType) and client.__name__ == "litellm"


class TracedLiteLLM:
    def __init__(self, module: ModuleType, tracer: Tracer | None) -> None:
        own = object.__setattr__
        own(self, "_module", module)
        own(self, "_tracer", tracer)
        own(self, "completion", traced_sync(module.completion, COMPLETION, tracer))
        own(self, "acompletion", traced_async(module.acompletion, ACOMPLETION, tracer))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._module, name, value)  # `litellm.api_key = ...` configures the module, as without the proxy

    def __dir__(self) -> list[str]:
        return dir(self._module)

    def __repr__(self) -> str:
        return f"<traced {self._module!r}>"


def wrap_litellm(client: ModuleType | TracedLiteLLM, tracer: Tracer | None) -> TracedLiteLLM:
    if isinstance(client, TracedLiteLLM):
        if tracer is None or tracer is client._tracer:
            return client
        client = client._module
    return TracedLiteLLM(client, tracer)
