"""Streamed LLM calls: accumulate the chunks into one result, and end the span when the stream ends.

The proxies hand every chunk to the caller unchanged and pass any other attribute through to the
client's stream object (openai's `.stream()` helpers read `.response` from it). The span ends when the
stream is exhausted, raises, or is closed; a stream dropped half-read ends it when it is collected.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Protocol, Self

from pipeline.sdk.llm.results import LLMResult, ToolCall, from_response, get, hidden_cost, usage_cost

if TYPE_CHECKING:
    from pipeline.sdk.llm.calls import LLMCall


class Accumulator(Protocol):
    def add(self, chunk: Any) -> None: ...
    def result(self) -> LLMResult: ...


class ChatAccumulator:
    """Chat completion chunks (openai and litellm): text deltas and tool-call deltas of the first choice."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.text: list[str] = []
        self.calls: dict[int, ToolCall] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.cost: float | None = None

    def add(self, chunk: Any) -> None:
        self.model = get(chunk, "model") or self.model
        usage = get(chunk, "usage")
        if usage is not None:  # sent on the last chunk when `stream_options.include_usage` is set
            self.usage = usage
        self.cost = hidden_cost(chunk) or self.cost
        for choice in get(chunk, "choices") or []:
            if get(choice, "index") or 0:
                continue
            delta = get(choice, "delta")
            content = get(delta, "content")
            if content:
                self.text.append(content)
            for part in get(delta, "tool_calls") or []:
                self._add_call(part)
            self.finish_reason = get(choice, "finish_reason") or self.finish_reason

    def _add_call(self, part: Any) -> None:
        index = get(part, "index")
        if index is None:  # some providers omit it: a new id starts a new call
            index = len(self.calls) if get(part, "id") or not self.calls else max(self.calls)
        call = self.calls.get(index)
        if call is None:
            call = self.calls[index] = ToolCall(None, None, "", get(part, "type") or "function")
        call.id = get(part, "id") or call.id
        fn = get(part, "function")
        call.name = get(fn, "name") or call.name  # sent once by OpenAI, repeated whole by some providers
        call.arguments = (call.arguments or "") + (get(fn, "arguments") or "")

    def result(self) -> LLMResult:
        return LLMResult(model=self.model, content="".join(self.text) if self.text else None,
                         tool_calls=[self.calls[i] for i in sorted(self.calls)], finish_reason=self.finish_reason,
                         input_tokens=get(self.usage, "prompt_tokens"),
                         output_tokens=get(self.usage, "completion_tokens"),
                         cost_usd=self.cost or usage_cost(self.usage))


class ResponsesAccumulator:
    """Responses API events: the final `response.*` event has everything; deltas cover a cut-off stream."""

    FINAL = ("response.completed", "response.incomplete", "response.failed")

    def __init__(self) -> None:
        self.model: str | None = None
        self.text: list[str] = []
        self.items: list[Any] = []
        self.final: Any = None
        self.error: str | None = None

    def add(self, event: Any) -> None:
        kind = get(event, "type")
        if kind == "response.output_text.delta":
            self.text.append(get(event, "delta") or "")
        elif kind == "response.output_item.done":
            self.items.append(get(event, "item"))
        elif kind in self.FINAL:
            self.final = get(event, "response")
        elif kind == "error":
            self.error = get(event, "message") or "error event in the stream"
        elif kind in ("response.created", "response.in_progress"):
            self.model = get(get(event, "response"), "model") or self.model

    def result(self) -> LLMResult:
        if self.final is not None:
            result = from_response(self.final)
        else:
            result = from_response({"model": self.model,
                                    "output": [i for i in self.items if get(i, "type") != "message"]})
        if result.content is None and self.text:
            result.content = "".join(self.text)
        if self.error is not None and result.error is None:
            result.error = self.error
        return result


def _passthrough(proxy: Any, name: str) -> Any:
    stream = proxy.__dict__.get("_stream")  # not self._stream: that would recurse before __init__ ran
    if stream is None:
        raise AttributeError(name)
    return getattr(stream, name)


class TracedStream:
    def __init__(self, stream: Any, call: LLMCall) -> None:
        self._stream = stream
        self._call = call

    def __iter__(self) -> TracedStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._stream)
        except StopIteration:
            self._call.end_stream(complete=True)
            raise
        except BaseException as exc:
            self._call.fail(exc)
            raise
        self._call.add(chunk)
        return chunk

    def close(self) -> None:
        try:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
        finally:
            self._call.end_stream(complete=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return _passthrough(self, name)

    def __del__(self) -> None:
        call = self.__dict__.get("_call")
        if call is not None:
            call.end_stream(complete=False)

    def __repr__(self) -> str:
        return f"<traced {self._stream!r}>"


class AsyncTracedStream:
    def __init__(self, stream: Any, call: LLMCall) -> None:
        self._stream = stream
        self._call = call

    def __aiter__(self) -> AsyncTracedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            self._call.end_stream(complete=True)
            raise
        except BaseException as exc:
            self._call.fail(exc)
            raise
        self._call.add(chunk)
        return chunk

    async def _close_with(self, *names: str) -> None:
        try:
            for name in names:  # openai's AsyncStream has an async `close`; litellm's wrapper `aclose`
                closer = getattr(self._stream, name, None)
                if closer is not None:
                    result = closer()
                    if inspect.isawaitable(result):
                        await result
                    break
        finally:
            self._call.end_stream(complete=False)

    async def close(self) -> None:
        await self._close_with("close", "aclose")

    async def aclose(self) -> None:
        await self._close_with("aclose", "close")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return _passthrough(self, name)

    def __del__(self) -> None:
        call = self.__dict__.get("_call")
        if call is not None:
            call.end_stream(complete=False)

    def __repr__(self) -> str:
        return f"<traced {self._stream!r}>"
