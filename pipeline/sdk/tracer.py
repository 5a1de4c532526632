"""Tracer: the SDK's entry point.

    tracer = Tracer(project="support-bot")          # EVALSTREAM_KAFKA_BOOTSTRAP says where to send

    @tracer.agent()
    @tracer.observe(span_type="tool")
    def handle(self, request: str) -> str: ...

Without a bootstrap server (or with EVALSTREAM_MONITORING=false) every call is a no-op; `configure`
can turn it on later. Nothing here raises into user code once the Tracer is built.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, overload

from pipeline.contracts.bounds import SESSION_ID_MAX_CHARS
from pipeline.contracts.sessions import SESSION_END_ATTRIBUTE
from pipeline.sdk.capture import Capture
from pipeline.sdk.config import Redactor, SDKConfig
from pipeline.sdk.context import (
    AgentRef,
    RemoteParent,
    current_agent,
    current_session,
    current_span,
    get_current_span,
    latest_tracer,
)
from pipeline.sdk.decorators import AgentSpec, Instrumented, instrument
from pipeline.sdk.evaluations import build_request
from pipeline.sdk.exporter import KafkaSpanExporter, SpanExporter
from pipeline.sdk.ids import IdGenerator, RandomIds, random_hex
from pipeline.sdk.internal import report, warn_once
from pipeline.sdk.span import NOOP_SPAN, NoopSpan, SpanHandle
from pipeline.sdk.wire import span_to_wire

F = TypeVar("F", bound=Callable[..., Any])

_UNSET: Any = object()


def _at_exit(callback: Callable[[], None]) -> None:
    """Flush before interpreter shutdown stops thread pools (plain atexit runs after that)."""
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError("no threading._register_atexit")
        register(callback)
    except RuntimeError:  # already shutting down, or an interpreter without it
        atexit.register(callback)


MAX_SESSION_ID = SESSION_ID_MAX_CHARS  # the pipeline's limit: longer ids cannot be assembled


class Tracer:
    def __init__(self, project: str | None = None, *, service: str | None = None,
                 bootstrap_servers: str | None = None, enabled: bool | None = None, evaluations: bool | None = None,
                 max_queue_size: int | None = None, flush_interval_s: float | None = None,
                 max_field_bytes: int | None = None, capture_io: bool | None = None, redact: Redactor | None = None,
                 kafka_options: Mapping[str, Any] | None = None, exporter: SpanExporter | None = None, id_generator: IdGenerator | None = None,
                 clock: Callable[[], int] | None = None) -> None:
        self._exporter: SpanExporter | None = None
        self._atexit_registered = False
        self.evaluations_dropped = 0
        latest_tracer.set(weakref.ref(self))
        self.configure(project=project, service=service, bootstrap_servers=bootstrap_servers, enabled=enabled,
                       evaluations=evaluations, max_queue_size=max_queue_size, flush_interval_s=flush_interval_s,
                       max_field_bytes=max_field_bytes, capture_io=capture_io, redact=redact,
                       kafka_options=kafka_options, exporter=exporter, id_generator=id_generator, clock=clock)

    def configure(self, **options: Any) -> Tracer:
        """(Re)resolve configuration: argument > env var > default. Spans already queued are flushed first."""
        exporter = options.pop("exporter", None)
        ids: IdGenerator = options.pop("id_generator", None) or RandomIds()
        clock = options.pop("clock", None) or time.time_ns
        options["monitoring"] = options.pop("enabled", None)
        self.config = SDKConfig.resolve(**options)
        self._new_trace_id = ids.trace_id
        self._new_span_id = ids.span_id
        self._clock = clock
        self._capture = Capture(self.config.max_field_bytes, self.config.redact)
        self._capture_io = self.config.capture_io
        previous = self._exporter
        if not self.config.monitoring:
            self._exporter = None
        elif exporter is not None:
            self._exporter = exporter
        elif self.config.bootstrap_servers:
            self._exporter = KafkaSpanExporter(self.config.bootstrap_servers,
                                               max_queue_size=self.config.max_queue_size,
                                               flush_interval_s=self.config.flush_interval_s,
                                               kafka_options=self.config.kafka_options)
        else:
            self._exporter = None
        if previous is not None and previous is not self._exporter:
            previous.shutdown()
        if isinstance(self._exporter, KafkaSpanExporter) and not self._atexit_registered:
            _at_exit(self.shutdown)
            self._atexit_registered = True
        return self

    # -- state ------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._exporter is not None

    @property
    def project(self) -> str:
        return self.config.project

    @property
    def exporter(self) -> SpanExporter | None:
        return self._exporter

    def stats(self) -> dict[str, int]:
        """Counters: queued, sent, dropped (queue full), failed (publish errors), evaluations_dropped."""
        base = self._exporter.stats() if self._exporter is not None else {"queued": 0, "sent": 0, "dropped": 0,
                                                                           "failed": 0}
        return {**base, "evaluations_dropped": self.evaluations_dropped}

    @property
    def dropped(self) -> int:
        """Spans lost so far: dropped because the queue was full, or failed to publish."""
        stats = self.stats()
        return stats["dropped"] + stats["failed"]

    # -- spans ------------------------------------------------------------------------------------
    def _start(self, name: str, span_type: str, agent: AgentRef | None = None,
               parent: SpanHandle | RemoteParent | None = _UNSET) -> SpanHandle:
        return SpanHandle(self, name, span_type, current_span.get() if parent is _UNSET else parent,
                          agent if agent is not None else current_agent.get())

    def _finish(self, span: SpanHandle) -> None:
        exporter = self._exporter
        if exporter is not None:
            exporter.emit(span)

    def _to_wire(self, span: SpanHandle) -> tuple[dict[str, Any], bool]:
        return span_to_wire(span, self._capture, self.config.project, self.config.service), span.ends_trace

    def start_span(self, name: str, span_type: str = "function", inputs: Any = None, *,
                   parent: SpanHandle | RemoteParent | None = _UNSET,
                   session_id: str | None = None) -> SpanHandle | NoopSpan:
        """A span that is not made current; end it with `end()`. `parent=None` starts a new trace."""
        if self._exporter is None:
            return NOOP_SPAN
        span = self._start(name, span_type, parent=parent)
        if inputs is not None:
            span.inputs = inputs
        if session_id:
            span.session_id = session_id
        return span

    def span(self, name: str, span_type: str = "function", inputs: Any = None, *,
             session_id: str | None = None) -> SpanHandle | NoopSpan:
        """`with tracer.span("retrieve", "retriever") as span:` — current inside the block; errors recorded."""
        return self.start_span(name, span_type, inputs, session_id=session_id)

    @contextmanager
    def session(self, session_id: str) -> Iterator[str]:
        """`with tracer.session(conversation_id):` — every trace started inside is a turn of that
        conversation (its spans carry `session_id`), in threads bound with `bind_context` and in asyncio
        tasks too. Set it once per conversation; `span(..., session_id=...)` sets it for one trace."""
        if not isinstance(session_id, str) or not session_id or len(session_id) > MAX_SESSION_ID:
            report("session", ValueError(f"session id must be a non-empty string of at most {MAX_SESSION_ID} "
                                         f"characters, not {session_id[:80] if isinstance(session_id, str) else session_id!r}"))
            yield session_id
            return
        token = current_session.set(session_id)
        try:
            yield session_id
        finally:
            current_session.reset(token)

    def end_session(self) -> None:
        """Say that the current trace is the conversation's last turn: the pipeline closes the session
        (and gives its closing verdicts) when this trace closes, instead of waiting for the idle timeout.
        Call it inside the turn's trace; outside one it is reported and ignored."""
        span = get_current_span()
        if span is None:
            report("end_session", RuntimeError("end_session() was called outside a trace; nothing to mark"))
            return
        span.set_attribute(SESSION_END_ATTRIBUTE, True)

    @contextmanager
    def agent_context(self, name: str, instance_id: str | None = None, inputs: Any = None) -> Iterator[Any]:
        """An agent's span as a block: everything inside is attributed to `name`."""
        token = current_agent.set(AgentRef(name, instance_id or random_hex(8)))
        try:
            with self.span(name, "agent", inputs) as span:
                yield span
        finally:
            current_agent.reset(token)

    def current_span(self) -> SpanHandle | NoopSpan:
        return get_current_span() or NOOP_SPAN

    # -- decorators -------------------------------------------------------------------------------
    @overload
    def observe(self, fn: F) -> F: ...
    @overload
    def observe(self, fn: None = None, *, span_type: str | None = None, name: str | None = None,
                capture_io: bool = True) -> Callable[[F], F]: ...

    def observe(self, fn: Any = None, *, span_type: str | None = None, name: str | None = None,
                capture_io: bool = True) -> Any:
        """Record each call as a span: inputs, output, errors (re-raised untouched), duration."""
        def decorate(target: F) -> F:
            inner: Instrumented | None = getattr(target, "__evalstream__", None)
            if inner is not None:  # @observe over @agent: one span with both settings
                spec = inner._replace(span_type=span_type or inner.span_type, name=name or inner.name,
                                      capture_io=capture_io)
            else:
                spec = Instrumented(target, span_type, name, None, capture_io)
            return instrument(self, spec)  # type: ignore[return-value]
        return decorate(fn) if fn is not None else decorate

    def agent(self, fn: Any = None, *, name: str | None = None, identifier: str | None = None) -> Any:
        """Attribute every span under this entry point to an agent (nested agents: the innermost wins).

        The agent's name defaults to the class of `self` for methods, else the function's name; its
        instance id is `getattr(self, identifier)` when given, else one per object (or per call).
        """
        if isinstance(fn, str):  # @tracer.agent("planner")
            fn, name = None, fn

        def decorate(target: F) -> F:
            inner: Instrumented | None = getattr(target, "__evalstream__", None)
            spec = AgentSpec(name, identifier)
            if inner is not None:  # @agent over @observe: the observed span becomes the agent's span
                return instrument(self, inner._replace(agent=spec,
                                                       span_type=inner.span_type or "agent"))  # type: ignore
            return instrument(self, Instrumented(target, "agent", name, spec, True))  # type: ignore
        return decorate(fn) if fn is not None else decorate

    def wrap(self, client: Any) -> Any:
        """Auto-track LLM calls of an OpenAI client (sync or async) or the litellm module."""
        from pipeline.sdk.llm import wrap

        return wrap(client, tracer=self)

    # -- online evaluation ------------------------------------------------------------------------
    def async_evaluate(self, scorer: Any, example: Any = None, *, sampling_rate: float = 1.0,
                       threshold: float | None = None, params: dict[str, Any] | None = None,
                       span: SpanHandle | None = None) -> bool:
        """Ask the pipeline to score `example` with `scorer` (a name, 'module:Class', or a Scorer).

        Attached to the current span (or `span`); returns whether this trace was sampled. Costs the
        caller only a hash; the scorer runs on the pipeline's workers.
        """
        if self._exporter is None:
            return False
        if not self.config.evaluations:
            self.evaluations_dropped += 1
            return False
        try:
            target = span if span is not None else get_current_span()
            standalone = target is None
            if standalone:
                warn_once("async_evaluate:no-span", "evalstream: async_evaluate called outside any span; it is "
                          "sent in a span of its own")
                target = self._start("async_evaluate", "evaluator", parent=None)
            request, sampled = build_request(target.trace_id, scorer, example, sampling_rate, threshold, params)
            if target.evaluations is None:
                target.evaluations = []
            target.evaluations.append(request)
            if standalone:
                target.end()
            return sampled
        except Exception as exc:  # noqa: BLE001
            report("async_evaluate", exc)
            return False

    # -- lifecycle --------------------------------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Publish everything recorded so far; True if done within `timeout_s`."""
        return self._exporter.flush(timeout_s) if self._exporter is not None else True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        if self._exporter is not None:
            self._exporter.shutdown(timeout_s)
