"""A trace's spans as a tree: children in start order, depth-first order, and ids the judge can type short."""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property
from typing import Any

import orjson

from pipeline.contracts import Span, Trace

MIN_ID_CHARS = 8


class SpanTree:
    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.by_id: dict[str, Span] = {s.span_id: s for s in trace.spans}
        children: dict[str | None, list[Span]] = defaultdict(list)
        for span in trace.spans:
            parent = span.parent_span_id if span.parent_span_id in self.by_id else None  # orphans become roots
            children[parent].append(span)
        for siblings in children.values():
            siblings.sort(key=lambda s: (s.start_ns, s.span_id))
        self.children = dict(children)

    @property
    def roots(self) -> list[Span]:
        return self.children.get(None, [])

    def children_of(self, span_id: str) -> list[Span]:
        return self.children.get(span_id, [])

    def walk(self) -> list[tuple[Span, int]]:
        """Every span once, depth first in start order, with its depth (roots are 0)."""
        out: list[tuple[Span, int]] = []
        stack: list[tuple[Span, int]] = [(s, 0) for s in reversed(self.roots)]
        seen: set[str] = set()
        while stack:
            span, depth = stack.pop()
            if span.span_id in seen:  # a cycle of parent ids in bad input must not loop forever
                continue
            seen.add(span.span_id)
            out.append((span, depth))
            stack.extend((c, depth + 1) for c in reversed(self.children_of(span.span_id)))
        return out

    @cached_property
    def depths(self) -> dict[str, int]:
        return {span.span_id: depth for span, depth in self.walk()}

    @cached_property
    def subtree_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for span, _ in reversed(self.walk()):
            sizes[span.span_id] = 1 + sum(sizes.get(c.span_id, 0) for c in self.children_of(span.span_id))
        return sizes

    @cached_property
    def id_chars(self) -> int:
        """The shortest prefix length (at least 8) that still tells every span id in this trace apart."""
        ids = list(self.by_id)
        longest = max((len(i) for i in ids), default=MIN_ID_CHARS)
        for length in range(MIN_ID_CHARS, longest + 1):
            if len({i[:length] for i in ids}) == len(ids):
                return length
        return longest

    def short_id(self, span: Span) -> str:
        return span.span_id[:self.id_chars]

    def resolve(self, ref: str) -> Span | None:
        """A span by its id or by a prefix that only it has."""
        ref = ref.strip().strip("[]")
        if ref in self.by_id:
            return self.by_id[ref]
        if not ref:
            return None
        found = [s for sid, s in self.by_id.items() if sid.startswith(ref)]
        return found[0] if len(found) == 1 else None


def render_value(value: Any, max_chars: int) -> str:
    """A payload as text: strings as they are, anything else as compact JSON; cut at `max_chars`."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            text = repr(value)
    if len(text) > max_chars:
        return f"{text[:max_chars]}… [{len(text) - max_chars} more chars]"
    return text


def span_label(span: Span) -> str:
    """`name (type)`, the way both renderings and the tools name a span."""
    return f"{span.name} ({span.span_type})"
