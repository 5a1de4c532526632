"""Wrapping functions in spans: sync, async, generators and async generators.

The caller pays for one SpanHandle, a contextvar set/reset and a deque append. Arguments are kept
by reference and bound to parameter names on the exporter's thread. A generator's span stays open
until the generator is exhausted or closed, and its body runs with the span as the current one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline.sdk.arguments import ArgBinder
from pipeline.sdk.context import AgentRef, current_agent, current_span
from pipeline.sdk.internal import report
from pipeline.sdk.span import SpanHandle

if TYPE_CHECKING:
    from pipeline.sdk.tracer import Tracer

MAX_GENERATOR_ITEMS = 1000


class Instrumented(NamedTuple):
    """Kept on the wrapper, so `@agent` over `@observe` (or the reverse) makes one span, not two."""

    fn: Callable[..., Any]
    span_type: str | None  # None: the caller did not choose one
    name: str | None
    agent: AgentSpec | None
    capture_io: bool


class AgentSpec(NamedTuple):
    name: str | None
    identifier: str | None


def _is_method(fn: Callable[..., Any]) -> bool:
    params = list(inspect.signature(fn).parameters)
    return bool(params) and params[0] in ("self", "cls")


def _agent_ref(spec: AgentSpec, fn_name: str, method: bool, args: tuple) -> AgentRef:
    owner = args[0] if method and args else None
    name = spec.name or (type(owner).__name__ if owner is not None else fn_name)
    if owner is not None and spec.identifier:
        instance = str(getattr(owner, spec.identifier, "") or f"{name}-{id(owner):x}")
    elif owner is not None:
        instance = f"{name}-{id(owner):x}"
    else:
        from pipeline.sdk.ids import random_hex

        instance = random_hex(8)
    return AgentRef(name, instance)


class _Hooks:
    """Start, enter, leave and finish one instrumented call's span."""

    __slots__ = ("agent", "capture_io", "method", "name", "signature", "span_type", "tracer")

    def __init__(self, tracer: Tracer, spec: Instrumented) -> None:
        self.tracer = tracer
        self.name = spec.name or spec.fn.__name__
        self.span_type = spec.span_type or ("agent" if spec.agent else "function")
        self.signature = ArgBinder(spec.fn)
        self.method = _is_method(spec.fn)
        self.agent = spec.agent
        self.capture_io = spec.capture_io

    def start(self, args: tuple, kwargs: dict) -> tuple[SpanHandle, AgentRef | None]:
        ref = _agent_ref(self.agent, self.name, self.method, args) if self.agent else None
        span = self.tracer._start(self.name, self.span_type, ref)
        if self.capture_io and self.tracer._capture_io:
            span.call = (self.signature, args, kwargs)
        return span, ref

    @staticmethod
    def enter(span: SpanHandle, ref: AgentRef | None) -> Any:
        token = current_agent.set(ref) if ref is not None else None
        span._activate()
        return token

    @staticmethod
    def leave(span: SpanHandle, agent_token: Any) -> None:
        span._deactivate()
        if agent_token is not None:
            try:
                current_agent.reset(agent_token)
            except ValueError:
                pass

    def finish(self, span: SpanHandle, exc: BaseException | None, result: Any = None) -> None:
        try:
            if exc is not None:
                span.record_error(exc)
            elif self.capture_io and self.tracer._capture_io:
                span.outputs = result
            span.end()
        except Exception as internal:  # noqa: BLE001
            report("ending a span", internal)


def instrument(tracer: Tracer, spec: Instrumented) -> Callable[..., Any]:
    fn = spec.fn
    hooks = _Hooks(tracer, spec)
    start, enter, leave, finish = hooks.start, hooks.enter, hooks.leave, hooks.finish

    if inspect.isasyncgenfunction(fn):
        wrapper = _async_generator_wrapper(tracer, fn, hooks)
    elif inspect.isgeneratorfunction(fn):
        wrapper = _generator_wrapper(tracer, fn, hooks)
    elif inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if tracer._exporter is None:
                return await fn(*args, **kwargs)
            try:
                span, ref = start(args, kwargs)
                token = enter(span, ref)
            except Exception as exc:  # noqa: BLE001
                report("opening a span", exc)
                return await fn(*args, **kwargs)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                leave(span, token)
                finish(span, exc)
                raise
            leave(span, token)
            finish(span, None, result)
            return result
    elif spec.agent is None:
        wrapper = _fast_wrapper(tracer, fn, hooks)
    else:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if tracer._exporter is None:
                return fn(*args, **kwargs)
            try:
                span, ref = start(args, kwargs)
                token = enter(span, ref)
            except Exception as exc:  # noqa: BLE001
                report("opening a span", exc)
                return fn(*args, **kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                leave(span, token)
                finish(span, exc)
                raise
            leave(span, token)
            finish(span, None, result)
            return result

    wrapper.__evalstream__ = spec  # type: ignore[attr-defined]
    return wrapper


def _fast_wrapper(tracer: Tracer, fn: Callable[..., Any], hooks: _Hooks) -> Callable[..., Any]:
    """The hot path for plain functions: the same steps as _Hooks, inlined (each call saved is ~70 ns)."""
    name, span_type, signature, capture_io = hooks.name, hooks.span_type, hooks.signature, hooks.capture_io
    get_span, set_span, reset_span, get_agent = current_span.get, current_span.set, current_span.reset, \
        current_agent.get

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        exporter = tracer._exporter
        if exporter is None:
            return fn(*args, **kwargs)
        try:
            span = SpanHandle(tracer, name, span_type, get_span(), get_agent())
            capture = capture_io and tracer._capture_io
            if capture:
                span.call = (signature, args, kwargs)
            token = set_span(span)
        except Exception as exc:  # noqa: BLE001
            report("opening a span", exc)
            return fn(*args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            reset_span(token)
            span.status = "error"
            span.error = exc
            span.end_ns = tracer._clock()
            span._count_end()
            exporter.emit(span)
            raise
        reset_span(token)
        if capture:
            span.outputs = result
        span.status = "ok"
        span.end_ns = tracer._clock()
        span._count_end()
        exporter.emit(span)
        return result

    return wrapper


def _generator_wrapper(tracer: Tracer, fn: Callable[..., Any], hooks: _Hooks) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if tracer._exporter is None:
            return (yield from fn(*args, **kwargs))
        span, ref = hooks.start(args, kwargs)
        items: list[Any] = []
        gen = fn(*args, **kwargs)
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                token = hooks.enter(span, ref)  # the body sees the span only while it is being stepped
                try:
                    item = gen.throw(to_throw) if to_throw is not None else gen.send(to_send)
                except StopIteration as stop:
                    result = stop.value
                    break
                finally:
                    hooks.leave(span, token)
                to_throw = None
                if len(items) < MAX_GENERATOR_ITEMS:
                    items.append(item)
                try:
                    to_send = yield item
                except GeneratorExit:
                    gen.close()
                    raise
                except BaseException as exc:  # noqa: BLE001 - thrown in by the consumer: the body handles it
                    to_throw = exc
        except GeneratorExit:
            hooks.finish(span, None, items)  # the consumer stopped early: not an error
            raise
        except BaseException as exc:
            hooks.finish(span, exc)
            raise
        hooks.finish(span, None, items if result is None else {"items": items, "return": result})
        return result

    return wrapper


def _async_generator_wrapper(tracer: Tracer, fn: Callable[..., Any], hooks: _Hooks) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if tracer._exporter is None:
            async for item in fn(*args, **kwargs):
                yield item
            return
        span, ref = hooks.start(args, kwargs)
        items: list[Any] = []
        agen = fn(*args, **kwargs)
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                token = hooks.enter(span, ref)
                try:
                    step = agen.athrow(to_throw) if to_throw is not None else agen.asend(to_send)
                    item = await step
                except StopAsyncIteration:
                    break
                finally:
                    hooks.leave(span, token)
                to_throw = None
                if len(items) < MAX_GENERATOR_ITEMS:
                    items.append(item)
                try:
                    to_send = yield item
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as exc:  # noqa: BLE001 - forwarded into the generator's body
                    to_throw = exc
        except GeneratorExit:
            hooks.finish(span, None, items)
            raise
        except BaseException as exc:
            hooks.finish(span, exc)
            raise
        hooks.finish(span, None, items)

    return wrapper
