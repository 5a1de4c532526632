"""The current span, agent and session (conversation), and the latest tracer, in contextvars: threads started
with a copied context and asyncio tasks (which copy it themselves) keep their parent."""

from __future__ import annotations

import contextvars
import functools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, ParamSpec, TypeVar

if TYPE_CHECKING:
    from pipeline.sdk.span import SpanHandle
    from pipeline.sdk.tracer import Tracer


P = ParamSpec("P")
R = TypeVar("R")


class RemoteParent(NamedTuple):
    """A span in another service, known from a W3C `traceparent` header."""

    trace_id: int
    span_id: int
    sampled: bool = True


class AgentRef(NamedTuple):
    name: str
    instance_id: str


current_span: contextvars.ContextVar[SpanHandle | RemoteParent | None] = contextvars.ContextVar(
    "evalstream_span", default=None)
current_agent: contextvars.ContextVar[AgentRef | None] = contextvars.ContextVar("evalstream_agent", default=None)
current_session: contextvars.ContextVar[str | None] = contextvars.ContextVar("evalstream_session", default=None)
# The Tracer built last in this context (a weak reference: a dropped tracer is not kept alive). `wrap(client)`
# without a tracer records into the current span's tracer, else this one (`active_tracer`).
latest_tracer: contextvars.ContextVar[weakref.ref[Tracer] | None] = contextvars.ContextVar(
    "evalstream_latest_tracer", default=None)


def get_current_span() -> SpanHandle | None:
    """The innermost open span of this context, or None (a remote parent is not a local span)."""
    span = current_span.get()
    return None if span is None or isinstance(span, RemoteParent) else span


def bind_context(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` bound to the current context, for threads that would otherwise start without it:
    `executor.submit(bind_context(work), item)` keeps the caller's span as the parent.
    (`asyncio.to_thread` and asyncio tasks already copy the context.)"""
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.copy().run(fn, *args, **kwargs)

    return bound


def active_tracer() -> Tracer | None:
    """What `wrap(client)` records into when it was given no tracer, looked up at each call: the tracer of the
    current span, else the Tracer built last in this context (`latest_tracer`: asyncio tasks and threads
    started with a copied context see it; other threads see the tracer of their current span)."""
    span = get_current_span()
    if span is not None:
        return span._tracer
    latest = latest_tracer.get()
    return latest() if latest is not None else None
