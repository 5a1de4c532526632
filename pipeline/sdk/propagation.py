"""W3C Trace Context: carry a trace across services in a `traceparent` header.

    headers = inject({})                      # caller side, inside a span
    with continue_trace(request.headers):     # callee side
        handle(request)                       # its spans join the caller's trace
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

from pipeline.sdk.context import RemoteParent, current_span
from pipeline.sdk.internal import warn_once

HEADER = "traceparent"
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


def format_traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse_traceparent(value: str) -> RemoteParent | None:
    """A RemoteParent, or None for a missing or invalid header (invalid ones are ignored, as the spec says)."""
    match = _TRACEPARENT.match(value.strip().lower())
    if not match:
        return None
    version, trace_hex, span_hex, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return RemoteParent(trace_id, span_id, sampled=bool(int(flags, 16) & 1))


def inject(headers: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Add a `traceparent` for the current span to `headers` (a new dict if None); no span, no header."""
    headers = {} if headers is None else headers
    span = current_span.get()
    if span is not None and not isinstance(span, RemoteParent):
        span.kind = "client"  # a remote call: the pipeline waits for the callee's spans before it closes the trace
    if span is not None:
        headers[HEADER] = format_traceparent(span.trace_id_int if not isinstance(span, RemoteParent)
                                             else span.trace_id,
                                             span.span_id_int if not isinstance(span, RemoteParent)
                                             else span.span_id)
    return headers


def extract(headers: Mapping[str, str]) -> RemoteParent | None:
    value = next((v for k, v in headers.items() if k.lower() == HEADER), None)
    if value is None:
        return None
    parent = parse_traceparent(value)
    if parent is None:
        warn_once("traceparent", "evalstream: ignoring an invalid traceparent header %r; starting a new trace",
                  value[:80])
    return parent


@contextmanager
def continue_trace(headers_or_parent: Mapping[str, str] | RemoteParent | None) -> Iterator[RemoteParent | None]:
    """Spans started inside join the remote trace. Their local root does not end the trace: the
    caller's root does, so the pipeline keeps waiting for the rest of it."""
    parent = headers_or_parent if isinstance(headers_or_parent, RemoteParent) or headers_or_parent is None \
        else extract(headers_or_parent)
    if parent is None:
        yield None
        return
    token = current_span.set(parent)
    try:
        yield parent
    finally:
        current_span.reset(token)
