"""Tracer: decorators and spans, nested through contextvars (so threads and asyncio tasks that copy
the context keep their parent)."""

from __future__ import annotations

import atexit
import contextvars
import functools
import inspect
import os
import random
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson

from pipeline.sdk.exporter import KafkaSpanExporter

F = TypeVar("F", bound=Callable[..., Any])

MAX_FIELD_BYTES = 32 * 1024

_current: contextvars.ContextVar[SpanHandle | None] = contextvars.ContextVar("evalstream_span", default=None)
_agent: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("evalstream_agent", default=None)


def _hex_id(bits: int) -> str:
    return f"{random.getrandbits(bits):0{bits // 4}x}"


def _capped(value: Any) -> Any:
    """Keep a value JSON-able and bounded; oversized values become a truncated string."""
    try:
        raw = orjson.dumps(value, default=repr)
    except (TypeError, orjson.JSONEncodeError):
        raw = orjson.dumps(repr(value))
    if len(raw) <= MAX_FIELD_BYTES:
        return orjson.loads(raw)
    return raw[:MAX_FIELD_BYTES].decode(errors="ignore") + "…[truncated]"


class SpanHandle:
    __slots__ = ("tracer", "data", "_token")

    def __init__(self, tracer: Tracer, data: dict[str, Any]) -> None:
        self.tracer = tracer
        self.data = data
        self._token: contextvars.Token | None = None

    @property
    def trace_id(self) -> str:
        return self.data["trace_id"]

    @property
    def span_id(self) -> str:
        return self.data["span_id"]

    def set_input(self, value: Any) -> None:
        self.data["inputs"] = _capped(value)

    def set_output(self, value: Any) -> None:
        self.data["outputs"] = _capped(value)

    def set_attribute(self, key: str, value: Any) -> None:
        self.data.setdefault("attributes", {})[key] = _capped(value)

    def record_llm(self, model: str, input_tokens: int | None = None, output_tokens: int | None = None,
                   cost_usd: float | None = None) -> None:
        self.data.update(model=model, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd)
        if input_tokens is not None and output_tokens is not None:
            self.data["total_tokens"] = input_tokens + output_tokens

    def record_error(self, exc: BaseException) -> None:
        self.data["status"] = "error"
        self.data["error"] = {"type": type(exc).__name__, "message": str(exc)[:4000],
                              "stack": "".join(traceback.format_exception(exc))[-8000:]}

    def end(self) -> None:
        self.data["end_ns"] = time.time_ns()
        if self.data.get("status") == "unset":
            self.data["status"] = "ok"
        self.tracer._finish(self)


class Tracer:
    """`Tracer(project=...)`: arguments win over `EVALSTREAM_*` env vars, which win over defaults."""

    def __init__(self, project: str = "default", *, bootstrap_servers: str | None = None, service: str | None = None,
                 enabled: bool | None = None, max_queue_size: int = 100_000, flush_interval_s: float = 0.1) -> None:
        self.project = project
        self.service = service
        if enabled is None:
            enabled = os.environ.get("EVALSTREAM_MONITORING", "true").lower() not in ("0", "false", "no", "off")
        bootstrap = bootstrap_servers or os.environ.get("EVALSTREAM_KAFKA_BOOTSTRAP")
        self.enabled = enabled and bool(bootstrap)
        self.exporter = KafkaSpanExporter(bootstrap, max_queue_size=max_queue_size,
                                          flush_interval_s=flush_interval_s) if self.enabled and bootstrap else None
        if self.exporter is not None:
            atexit.register(self.shutdown)

    # -- spans ----------------------------------------------------------------------------------
    def start_span(self, name: str, span_type: str = "function", inputs: Any = None) -> SpanHandle:
        parent = _current.get()
        agent = _agent.get()
        data: dict[str, Any] = {
            "trace_id": parent.trace_id if parent else _hex_id(128),
            "span_id": _hex_id(64),
            "parent_span_id": parent.span_id if parent else None,
            "name": name,
            "span_type": span_type,
            "start_ns": time.time_ns(),
            "status": "unset",
            "project": self.project,
        }
        if self.service:
            data["service"] = self.service
        if agent:
            data["agent_name"], data["agent_id"] = agent
        if inputs is not None:
            data["inputs"] = _capped(inputs)
        return SpanHandle(self, data)

    def _finish(self, handle: SpanHandle) -> None:
        if self.exporter is not None:
            self.exporter.emit(handle.data, root_ended=handle.data["parent_span_id"] is None)

    @contextmanager
    def span(self, name: str, span_type: str = "function", inputs: Any = None) -> Iterator[SpanHandle]:
        handle = self.start_span(name, span_type, inputs)
        token = _current.set(handle)
        try:
            yield handle
        except BaseException as exc:
            handle.record_error(exc)
            raise
        finally:
            _current.reset(token)
            handle.end()

    @contextmanager
    def agent_context(self, name: str, instance_id: str | None = None, inputs: Any = None) -> Iterator[SpanHandle]:
        token = _agent.set((name, instance_id or _hex_id(32)))
        try:
            with self.span(name, "agent", inputs) as handle:
                yield handle
        finally:
            _agent.reset(token)

    # -- decorators -----------------------------------------------------------------------------
    def observe(self, span_type: str = "function", name: str | None = None) -> Callable[[F], F]:
        return lambda fn: self._wrap(fn, span_type, name or fn.__name__, agent=False)

    def agent(self, name: str | None = None) -> Callable[[F], F]:
        """Every span under this function is attributed to the agent (the innermost agent wins)."""
        return lambda fn: self._wrap(fn, "agent", name or fn.__name__, agent=True)

    def _wrap(self, fn: F, span_type: str, name: str, agent: bool) -> F:
        signature = inspect.signature(fn)

        def open_span(args: tuple, kwargs: dict) -> Any:
            try:
                bound = signature.bind_partial(*args, **kwargs)
                inputs = {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}
            except TypeError:
                inputs = {"args": args, "kwargs": kwargs}
            return self.agent_context(name, inputs=inputs) if agent else self.span(name, span_type, inputs)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if not self.enabled:
                    return await fn(*args, **kwargs)
                with open_span(args, kwargs) as handle:
                    result = await fn(*args, **kwargs)
                    handle.set_output(result)
                    return result
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return fn(*args, **kwargs)
            with open_span(args, kwargs) as handle:
                result = fn(*args, **kwargs)
                handle.set_output(result)
                return result
        return wrapper  # type: ignore[return-value]

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        return self.exporter.dropped + self.exporter.failed if self.exporter else 0

    def flush(self, timeout_s: float = 10.0) -> bool:
        return self.exporter.flush(timeout_s) if self.exporter else True

    def shutdown(self) -> None:
        if self.exporter is not None:
            self.exporter.shutdown()
