"""SpanHandle: what the caller's thread builds. Plain attribute writes only; turning it into the wire
format (binding arguments, redaction, capping, formatting errors) happens on the exporter's thread."""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from pipeline.sdk.context import AgentRef, RemoteParent, current_session, current_span

if TYPE_CHECKING:
    from pipeline.sdk.arguments import ArgBinder
    from pipeline.sdk.tracer import Tracer

_UNSET = "unset"


class TraceProgress:
    """The spans of one trace started and ended in this process, shared by its span handles. A root's batch
    is `final` ("nothing more from me") only once every span this process started in the trace has ended,
    so a child that outlives its root (fire-and-forget work) is in the trace's first version.
    deque.append and len are atomic, so threads need no lock: whoever ends last sees the counts meet."""

    __slots__ = ("ended", "root_ended", "started")

    def __init__(self) -> None:
        self.started: deque[None] = deque()
        self.ended: deque[None] = deque()
        self.root_ended = False


class SpanHandle:
    """An open span. Ended by the decorator or context manager that opened it, or by `end()`."""

    # Optional fields are class-level defaults, so opening a span writes only what every span has.
    trace_id_int: int
    span_id_int: int
    parent_id_int: int | None
    remote_parent: bool = False
    kind: str | None = None  # "client" once `inject()` carried the trace to another service from this span
    closes_trace: bool = False  # set when it ends: the trace's root has ended, and nothing else is open here
    spans_still_open: int = 0  # set on a root that ends before some of its trace's spans
    session_id: str | None = None
    end_ns: int = 0
    status: str = _UNSET
    error: BaseException | None = None
    inputs: Any = None
    outputs: Any = None
    attributes: dict[str, Any] | None = None
    llm: dict[str, Any] | None = None
    evaluations: list[dict[str, Any]] | None = None
    call: tuple[ArgBinder, tuple, dict] | None = None  # bound into `inputs` on the exporter's thread
    _token: Any = None

    def __init__(self, tracer: Tracer, name: str, span_type: str,
                 parent: SpanHandle | RemoteParent | None, agent: AgentRef | None) -> None:
        self._tracer = tracer
        if parent is None or type(parent) is RemoteParent:
            self._progress = TraceProgress()
        else:
            self._progress = parent._progress  # type: ignore[union-attr]
        self._progress.started.append(None)
        if parent is None:
            self.trace_id_int = tracer._new_trace_id()
            self.parent_id_int = None
            session = current_session.get()
            if session is not None:
                self.session_id = session
        elif type(parent) is RemoteParent:
            self.trace_id_int = parent.trace_id
            self.parent_id_int = parent.span_id
            self.remote_parent = True
            session = current_session.get()
            if session is not None:
                self.session_id = session
        else:
            self.trace_id_int = parent.trace_id_int  # type: ignore[union-attr]
            self.parent_id_int = parent.span_id_int  # type: ignore[union-attr]
            if parent.session_id is not None:  # type: ignore[union-attr]
                self.session_id = parent.session_id  # type: ignore[union-attr]
        self.span_id_int = tracer._new_span_id()
        self.name = name
        self.span_type = span_type
        self.start_ns = tracer._clock()
        self.agent = agent

    # -- identity ---------------------------------------------------------------------------------
    @property
    def trace_id(self) -> str:
        return f"{self.trace_id_int:032x}"

    @property
    def span_id(self) -> str:
        return f"{self.span_id_int:016x}"

    @property
    def parent_span_id(self) -> str | None:
        return None if self.parent_id_int is None else f"{self.parent_id_int:016x}"

    @property
    def is_root(self) -> bool:
        return self.parent_id_int is None and not self.remote_parent

    @property
    def ends_trace(self) -> bool:
        """True for the span whose batch is `final`: the trace's root has ended and no other span of it is
        open in this process, so the pipeline may close the trace as soon as its remote calls are answered."""
        return self.closes_trace

    @property
    def recording(self) -> bool:
        return True

    # -- what users record ------------------------------------------------------------------------
    def set_input(self, value: Any) -> None:
        self.inputs = value
        self.call = None

    def set_output(self, value: Any) -> None:
        self.outputs = value

    def set_attribute(self, key: str, value: Any) -> None:
        if self.attributes is None:
            self.attributes = {}
        self.attributes[key] = value

    def set_attributes(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self.set_attribute(key, value)

    def set_session(self, session_id: str) -> None:
        """Group this trace into a conversation; child spans started afterwards inherit it."""
        self.session_id = session_id

    def record_llm(self, model: str | None = None, input_tokens: int | None = None, output_tokens: int | None = None,
                   cost_usd: float | None = None, **extra: Any) -> None:
        """Model and usage of an LLM call; cost is filled by the pipeline from litellm's price map when omitted."""
        llm = self.llm if self.llm is not None else {}
        for key, value in (("model", model), ("input_tokens", input_tokens), ("output_tokens", output_tokens),
                           ("cost_usd", cost_usd)):
            if value is not None:
                llm[key] = value
        if extra:
            llm.setdefault("extra", {}).update(extra)
        self.llm = llm

    def record_error(self, exc: BaseException) -> None:
        self.status = "error"
        self.error = exc

    def end(self, end_ns: int | None = None) -> None:
        """End the span and queue it for export; a second call does nothing."""
        if self.end_ns:
            return
        self.end_ns = end_ns or self._tracer._clock()
        if self.status == _UNSET:
            self.status = "ok"
        self._count_end()
        self._tracer._finish(self)

    def _count_end(self) -> None:
        """Count this span as ended in its trace's progress (every path that ends a span calls it)."""
        progress = self._progress
        if self.is_root:
            progress.root_ended = True
        progress.ended.append(None)
        still_open = len(progress.started) - len(progress.ended)
        if progress.root_ended and still_open <= 0:
            self.closes_trace = True
        elif self.is_root:
            self.spans_still_open = still_open

    def to_wire(self) -> tuple[dict[str, Any], bool]:
        """Called by the exporter, off the caller's thread."""
        return self._tracer._to_wire(self)

    # -- used by the tracer's decorators ----------------------------------------------------------
    def _activate(self) -> SpanHandle:
        self._token = current_span.set(self)
        return self

    def _deactivate(self) -> None:
        if self._token is not None:
            try:
                current_span.reset(self._token)
            except ValueError:  # ended in another context (a generator closed elsewhere): nothing to restore
                pass
            self._token = None

    def __enter__(self) -> Self:
        self._activate()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self.record_error(exc)
        self._deactivate()
        self.end()

    def __repr__(self) -> str:
        return f"<SpanHandle {self.name!r} trace={self.trace_id} span={self.span_id} status={self.status}>"


class NoopSpan:
    """What the SDK hands out while monitoring is off or unconfigured: accepts everything, records nothing."""

    __slots__ = ()
    trace_id = "0" * 32
    span_id = "0" * 16
    parent_span_id = None
    ends_trace = False
    recording = False

    def set_input(self, value: Any) -> None: ...
    def set_output(self, value: Any) -> None: ...
    def set_attribute(self, key: str, value: Any) -> None: ...
    def set_attributes(self, values: dict[str, Any]) -> None: ...
    def set_session(self, session_id: str) -> None: ...
    def record_llm(self, *args: Any, **kwargs: Any) -> None: ...
    def record_error(self, exc: BaseException) -> None: ...
    def end(self, end_ns: int | None = None) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None: ...


NOOP_SPAN = NoopSpan()
