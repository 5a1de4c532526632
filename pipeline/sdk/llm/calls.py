"""One traced LLM call: open an `llm` span, call through, record the response (or stream) and end it.

The span is opened with `start_span`, so it is a child of the current span and never becomes current
itself. Errors from the call are recorded and re-raised untouched; errors in our recording code go to
`internal.report` and never reach the caller (outside pytest).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.sdk.context import active_tracer
from pipeline.sdk.internal import internal_errors, report
from pipeline.sdk.llm.results import LLMResult, record
from pipeline.sdk.llm.streams import Accumulator, AsyncTracedStream, TracedStream

if TYPE_CHECKING:
    from pipeline.sdk.span import SpanHandle
    from pipeline.sdk.tracer import Tracer

ORIGINAL = "__evalstream_llm_original__"  # set on our wrappers: what they wrap (so wrapping twice rebinds)


@dataclass(frozen=True)
class Api:
    """How one client method's calls are named, described and read."""

    name: str
    inputs: Callable[[dict[str, Any], bool], dict[str, Any]]
    parse: Callable[[Any], LLMResult]
    accumulator: Callable[[], Accumulator]
    positional: tuple[str, ...] = ()  # names of leading positional parameters (litellm's model, messages)


class LLMCall:
    """The span of one call in flight; for a stream, also what the chunks added up to so far."""

    __slots__ = ("accumulator", "api", "capture_io", "ended", "model", "span")

    def __init__(self, span: SpanHandle, api: Api, model: Any, capture_io: bool) -> None:
        self.span = span
        self.api = api
        self.model = model
        self.capture_io = capture_io
        self.accumulator: Accumulator | None = None
        self.ended = False

    def succeeded(self, response: Any) -> None:
        self.ended = True
        try:
            with internal_errors("llm: recording a response"):
                record(self.span, self.api.parse(response), self.model, self.capture_io)
        finally:
            self.span.end()

    def fail(self, exc: BaseException) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            with internal_errors("llm: recording a stream's partial output"):
                if self.accumulator is not None:
                    record(self.span, self.accumulator.result(), self.model, self.capture_io)
        finally:
            self.span.record_error(exc)
            self.span.end()

    def add(self, chunk: Any) -> None:
        if self.accumulator is None:
            return
        try:
            self.accumulator.add(chunk)
        except Exception as exc:  # noqa: BLE001 - stop accumulating, keep streaming
            self.accumulator = None
            report("llm: reading a stream chunk", exc)

    def end_stream(self, complete: bool) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            with internal_errors("llm: recording a stream"):
                if self.accumulator is not None:
                    result = self.accumulator.result()
                    result.incomplete = not complete
                    record(self.span, result, self.model, self.capture_io)
        finally:
            self.span.end()


def _raw_response(request: dict[str, Any]) -> bool:
    # `with_raw_response` / `with_streaming_response` call `create` with this header and get an HTTP
    # response object back, not a completion: not traced (see the package docstring).
    headers = request.get("extra_headers")
    return isinstance(headers, Mapping) and any(str(k).lower() == "x-stainless-raw-response" for k in headers)


def _start(api: Api, tracer: Tracer | None, args: tuple, kwargs: dict[str, Any]) -> tuple[LLMCall | None, bool]:
    """The call's span (None: just call through) and whether a stream was asked for."""
    if tracer is None:
        tracer = active_tracer()
    if tracer is None or not tracer.enabled:
        return None, False
    try:
        request = {**dict(zip(api.positional, args, strict=False)), **kwargs} if args else kwargs
        if _raw_response(request):
            return None, False
        capture_io = tracer.config.capture_io
        span = tracer.start_span(api.name, "llm", inputs=api.inputs(request, capture_io))
        if not span.recording:
            return None, False
        return LLMCall(span, api, request.get("model"), capture_io), request.get("stream") is True
    except Exception as exc:  # noqa: BLE001
        report("llm: opening a span", exc)
        return None, False


def traced_sync(fn: Callable[..., Any], api: Api, tracer: Tracer | None) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        llm, stream = _start(api, tracer, args, kwargs)
        if llm is None:
            return fn(*args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            llm.fail(exc)
            raise
        if stream and hasattr(result, "__next__"):
            llm.accumulator = api.accumulator()
            return TracedStream(result, llm)
        llm.succeeded(result)
        return result

    setattr(call, ORIGINAL, fn)
    return call


def traced_async(fn: Callable[..., Any], api: Api, tracer: Tracer | None) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        llm, stream = _start(api, tracer, args, kwargs)
        if llm is None:
            return await fn(*args, **kwargs)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            llm.fail(exc)
            raise
        if stream and hasattr(result, "__anext__"):
            llm.accumulator = api.accumulator()
            return AsyncTracedStream(result, llm)
        llm.succeeded(result)
        return result

    setattr(call, ORIGINAL, fn)
    return call
