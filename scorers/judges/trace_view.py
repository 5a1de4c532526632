"""Two renderings of a trace for a judge: whole (inline), or its structure only (the skeleton).

The skeleton has span ids, names, types, agents, durations, errors and nesting, and no payloads (only the
error spans' messages, cut short, in a list of their own). It folds
runs of siblings that repeat the same shape (an agent loop's llm -> tool -> llm -> tool ...) into one line,
never folding a span in error, and fills its token budget breadth first: the top of the tree always shows,
and a span whose children did not fit says how many are hidden. The agent judge shows it with tools that
fetch the rest.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from pipeline.contracts import Span, Trace
from scorers.judges.span_tree import SpanTree, render_value
from scorers.judges.tokens import CHARS_PER_TOKEN

INLINE_VALUE_CHARS = 4000
SKELETON_TOKENS = 2000  # resent on every step of the agent judge, so it is kept well under the inline limit
MAX_PERIOD = 4  # longest repeating block of siblings that is folded (llm, tool, tool, llm ...)
LISTED_ERRORS = 10


# -- inline -----------------------------------------------------------------------------------------

def render_trace(trace: Trace, max_value_chars: int = INLINE_VALUE_CHARS) -> str:
    """The whole trace: every span in tree order with its inputs, outputs, attributes and error."""
    tree = SpanTree(trace)
    lines = [_header(trace, tree)]
    for span, depth in tree.walk():
        pad = "  " * depth
        lines.append(pad + _span_line(tree, span, show_agent=True) + _usage(span))
        for label, value in (("inputs", span.inputs), ("outputs", span.outputs),
                             ("attributes", span.attributes or None)):
            if value is not None:
                lines.append(f"{pad}  {label}: {render_value(value, max_value_chars)}")
        if span.error is not None:
            lines.append(f"{pad}  error: {span.error.type}: {render_value(span.error.message, max_value_chars)}")
    return "\n".join(lines)


def _usage(span: Span) -> str:
    parts = []
    if span.model:
        parts.append(f"model={span.model}")
    if span.input_tokens is not None or span.output_tokens is not None:
        parts.append(f"tokens={span.input_tokens or 0}/{span.output_tokens or 0}")
    return "".join(f" · {p}" for p in parts)


# -- skeleton ---------------------------------------------------------------------------------------

HIDDEN_MARK_CHARS = 32  # reserved per laid-out span with children, for its " · +N children not shown" mark


@dataclass
class _Unit:
    """One skeleton line: a span (whose children may be laid out under it) or a folded run of siblings."""

    depth: int
    text: str
    span: Span | None  # None for a folded run
    siblings: int  # how many of its parent's children this line stands for: 1, or the run's length
    children: list[_Unit] = field(default_factory=list)


def render_skeleton(trace: Trace, max_tokens: int = SKELETON_TOKENS) -> str:
    """The structure of the trace within about `max_tokens`; payloads are left to the tools.

    Lines are laid out breadth first until the budget is spent, so the top of the tree is always there and
    the deeper levels get what is left; a span whose children did not all fit says how many are not shown.
    """
    tree = SpanTree(trace)
    head = [_header(trace, tree), *_error_list(tree),
            ("Tree (ids in brackets; payloads omitted; a span is ok unless marked ERROR; "
             "'+N children not shown': list_spans(parent_id=that id) pages through them):")]
    budget = max_tokens * CHARS_PER_TOKEN - sum(len(h) + 1 for h in head)
    top = _lay_out(tree, _Shapes(tree), budget)
    body: list[str] = []
    stack = list(reversed(top))
    while stack:
        unit = stack.pop()
        text = unit.text
        if unit.span is not None:
            hidden = len(tree.children_of(unit.span.span_id)) - sum(child.siblings for child in unit.children)
            if hidden:
                text += f" · +{hidden} children not shown"
        body.append("  " * unit.depth + text)
        stack.extend(reversed(unit.children))
    return "\n".join([*head, *body])


def _lay_out(tree: SpanTree, shapes: _Shapes, budget: int) -> list[_Unit]:
    top: list[_Unit] = []
    # sibling lists in breadth-first order: (where their lines go, siblings, depth, the parent's agent)
    queue: deque[tuple[list[_Unit], list[Span], int, str | None]] = deque([(top, tree.roots, 0, None)])
    used = 0
    while queue:
        into, siblings, depth, parent_agent = queue.popleft()
        for unit in _units(tree, shapes, siblings, depth, parent_agent):
            kids = tree.children_of(unit.span.span_id) if unit.span is not None else []
            cost = 2 * depth + len(unit.text) + 1 + (HIDDEN_MARK_CHARS if kids else 0)
            if used + cost > budget:
                return top
            used += cost
            into.append(unit)
            if kids and unit.span is not None:
                queue.append((unit.children, kids, depth + 1, unit.span.agent_name))
    return top


def _units(tree: SpanTree, shapes: _Shapes, siblings: list[Span], depth: int,
           parent_agent: str | None) -> list[_Unit]:
    out: list[_Unit] = []
    index = 0
    while index < len(siblings):
        run = shapes.run_at(siblings, index)
        if run is not None:
            period, repeats = run
            spans = siblings[index:index + period * repeats]
            out.append(_Unit(depth, _run_line(tree, spans, period, repeats, parent_agent), None, len(spans)))
            index += period * repeats
            continue
        span = siblings[index]
        out.append(_Unit(depth, _span_line(tree, span, show_agent=span.agent_name != parent_agent), span, 1))
        index += 1
    return out


def _run_line(tree: SpanTree, spans: list[Span], period: int, repeats: int, parent_agent: str | None) -> str:
    first, last = tree.short_id(spans[0]), tree.short_id(spans[-1])
    block = spans[:period]
    durations = [s.duration_ms for s in spans]
    agent = block[0].agent_name
    shown = " · agent=" + agent if agent and agent != parent_agent else ""
    below = sum(tree.subtree_sizes[s.span_id] - 1 for s in spans)
    below_text = f" · {below} spans below them" if below else ""
    if period == 1:
        what = f"{block[0].name} · {block[0].span_type}"
    else:
        what = "repeating: " + " -> ".join(f"{s.name} ({s.span_type})" for s in block)
    return (f"[{first} … {last}] ×{repeats} {what}{shown} · {min(durations):.0f}–{max(durations):.0f} ms each"
            f"{below_text} · all ok")


def _span_line(tree: SpanTree, span: Span, *, show_agent: bool) -> str:
    parts = [f"[{tree.short_id(span)}] {span.name}", span.span_type, f"{span.duration_ms:.0f} ms"]
    if show_agent and span.agent_name:
        parts.append(f"agent={span.agent_name}")
    if span.status == "error":
        parts.append(f"ERROR {span.error.type}" if span.error else "ERROR")
    return " · ".join(parts)


def _header(trace: Trace, tree: SpanTree) -> str:
    types = Counter(s.span_type for s in trace.spans)
    errors = sum(s.status == "error" for s in trace.spans)
    agents = sorted({s.agent_name for s in trace.spans if s.agent_name})
    name = f' "{trace.name}"' if trace.name else ""
    text = (f"Trace {trace.trace_id}{name} · {trace.status} ({trace.close_reason}) · {trace.duration_ms:.0f} ms · "
            f"{len(trace.spans)} spans: " + ", ".join(f"{n} {t}" for t, n in types.most_common())
            + f" · {errors} in error")
    if agents:
        text += "\nAgents: " + ", ".join(agents)
    return text


def _error_list(tree: SpanTree) -> list[str]:
    errors = [s for s, _ in tree.walk() if s.status == "error"]
    if not errors:
        return []
    lines = ["Spans in error (type: message):"]
    for span in errors[:LISTED_ERRORS]:
        detail = f"{span.error.type}: {render_value(span.error.message, 120)}" if span.error else "status=error"
        lines.append(f"- [{tree.short_id(span)}] {span.name} ({detail})")
    if len(errors) > LISTED_ERRORS:
        lines.append(f"- … {len(errors) - LISTED_ERRORS} more: list_spans(status=\"error\")")
    return lines


class _Shapes:
    """Which siblings repeat: two spans have the same shape when name, type, agent and their subtrees'
    shapes match and nothing in them failed."""

    def __init__(self, tree: SpanTree) -> None:
        self._ids: dict[tuple[object, ...], int] = {}
        self.shape: dict[str, int] = {}
        self.clean: dict[str, bool] = {}
        for span, _ in reversed(tree.walk()):
            kids = tree.children_of(span.span_id)
            key = (span.name, span.span_type, span.agent_name, tuple(self.shape[k.span_id] for k in kids))
            self.shape[span.span_id] = self._ids.setdefault(key, len(self._ids))
            self.clean[span.span_id] = span.status != "error" and all(self.clean[k.span_id] for k in kids)

    def run_at(self, siblings: list[Span], index: int) -> tuple[int, int] | None:
        """(period, repeats) of the longest foldable repetition starting at `index`, if any."""
        best: tuple[int, int] | None = None
        for period in range(1, MAX_PERIOD + 1):
            block = siblings[index:index + period]
            if len(block) < period or not all(self.clean[s.span_id] for s in block):
                break
            pattern = [self.shape[s.span_id] for s in block]
            repeats = 1
            while True:
                nxt = siblings[index + repeats * period:index + (repeats + 1) * period]
                if len(nxt) < period or [self.shape[s.span_id] for s in nxt] != pattern or \
                        not all(self.clean[s.span_id] for s in nxt):
                    break
                repeats += 1
            if repeats >= (3 if period == 1 else 2) and (best is None or period * repeats > best[0] * best[1]):
                best = (period, repeats)
        return best
