"""`evalstream traces show`: a stored trace as a span tree, each span with its agent, duration, status
and the scores attached to it; LLM spans with model, tokens and cost, LLM and tool spans with a preview of
what they said; under a judged score, the judge's calls from its evaluation trace (`judge_calls.py`).
Building the tree is pure; `load_trace` reads it from storage."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape
from rich.tree import Tree

from pipeline.storage.filters import Eq, Fixed, where
from pipeline.storage.reader import Reader
from pipeline.views.judge_calls import READ_CHARS, JudgeCallLine, load_judge_calls, preview, usage_text

TRACE_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


@dataclass
class ScoreLine:
    rule: str
    scorer: str
    status: str
    value: Any
    passed: bool | None
    reason: str
    evaluation_trace_id: str = ""
    judge_calls: list[JudgeCallLine] = field(default_factory=list)


@dataclass
class SpanNode:
    span_id: str
    parent_span_id: str
    name: str
    span_type: str
    agent: str
    duration_ms: float
    status: str
    start: Any
    error: str = ""
    model: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    preview: str = ""
    scores: list[ScoreLine] = field(default_factory=list)
    children: list[SpanNode] = field(default_factory=list)


def build_tree(spans: list[SpanNode], scores: list[tuple[str, ScoreLine]]) -> list[SpanNode]:
    """Roots in start order, children under their parents. A span whose parent is missing is a root,
    so nothing is hidden. A score names its span (trace-level scores have none and go on the roots)."""
    by_id = {s.span_id: s for s in spans}
    roots: list[SpanNode] = []
    for node in sorted(spans, key=lambda s: (s.start, s.span_id)):
        parent = by_id.get(node.parent_span_id) if node.parent_span_id else None
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    for span_id, score in scores:
        target = by_id.get(span_id) if span_id else None
        if target is None and roots:
            target = roots[0]
        if target is not None:
            target.scores.append(score)
    return roots


def _verdict(score: ScoreLine) -> str:
    if score.status != "scored":
        return f"[red]error[/] {escape(score.reason[:120])}"
    mark = {True: "[green]pass[/]", False: "[red]fail[/]"}.get(score.passed, "[yellow]no verdict[/]")  # type: ignore[arg-type]
    value = "" if score.value in (None, "") else f" {escape(str(score.value))}"
    reason = f" — {escape(score.reason[:120])}" if score.reason else ""
    return f"{mark}{value}{reason}"


def _label(node: SpanNode) -> str:
    status = "[red]error[/]" if node.status == "error" else "ok"
    agent = f" · agent [cyan]{escape(node.agent)}[/]" if node.agent else ""
    error = f" · {escape(node.error[:100])}" if node.error else ""
    usage = usage_text(node.model, node.input_tokens, node.output_tokens, node.cost_usd)
    usage = f" · {escape(usage)}" if usage else ""
    said = f" [dim]— {escape(node.preview)}[/]" if node.preview else ""
    return (f"[bold]{escape(node.name)}[/] [dim]{escape(node.span_type)}[/]{agent}{usage} · "
            f"{node.duration_ms:.1f} ms · {status}{error}{said}")


def _judge_call(call: JudgeCallLine) -> str:
    usage = usage_text(call.model, call.input_tokens, call.output_tokens, call.cost_usd)
    status = " · [red]error[/]" if call.status == "error" else ""
    return (f"[dim]↳[/] {escape(call.name)} [dim]{escape(call.span_type)}[/]{f' · {escape(usage)}' if usage else ''}"
            f" · {call.duration_ms:.1f} ms{status} [dim]— {escape(call.preview)}[/]")


def render(title: str, roots: list[SpanNode]) -> Tree:
    tree = Tree(title)

    def add(parent: Tree, node: SpanNode) -> None:
        branch = parent.add(_label(node))
        for score in node.scores:
            line = branch.add(f"[magenta]◆ {escape(score.rule)}[/] ({escape(score.scorer)}): {_verdict(score)}")
            if score.evaluation_trace_id:
                judge = line.add(f"[dim]judge trace {escape(score.evaluation_trace_id)}[/]")
                for call in score.judge_calls:
                    judge.add(_judge_call(call))
        for child in node.children:
            add(branch, child)

    for root in roots:
        add(tree, root)
    return tree


def load_trace(reader: Reader, trace_id: str, version: int | None = None) -> tuple[dict[str, Any], list[SpanNode]] | None:
    """The trace's header and span tree at `version` (default: the latest), or None if it is not stored."""
    if not TRACE_ID.match(trace_id):
        raise ValueError(f"not a trace id: {trace_id!r}")
    db, this = reader.database, Eq("trace_id", trace_id)
    header = reader.query(
        f"SELECT version, project, status, close_reason, name, span_count, error_count, duration_ms, cost_usd, "
        f"closed_at FROM {db}.traces FINAL {where(this, Eq('version', version))}ORDER BY version DESC LIMIT 1")
    if not header.rows:
        return None
    info = dict(zip(header.columns, header.rows[0], strict=True))
    up_to_version = Fixed(f"trace_version <= {int(info['version'])}")
    said = "span_type IN ('llm', 'tool', 'evaluator')"
    spans = reader.query(
        f"SELECT span_id, parent_span_id, name, span_type, agent_name, duration_ms, status, start_time, "
        f"error_message, model, input_tokens, output_tokens, cost_usd, "
        f"if({said}, substring(inputs, 1, {READ_CHARS}), '') AS inputs_head, "
        f"if({said}, substring(outputs, 1, {READ_CHARS}), '') AS outputs_head "
        f"FROM {db}.spans FINAL {where(this, up_to_version)}ORDER BY trace_version DESC LIMIT 1 BY span_id")
    nodes = [SpanNode(span_id=r[0], parent_span_id=r[1], name=r[2], span_type=r[3], agent=r[4],
                      duration_ms=float(r[5] or 0), status=r[6], start=r[7], error=r[8] or "", model=r[9] or "",
                      input_tokens=r[10], output_tokens=r[11], cost_usd=r[12],
                      preview=preview(r[3], r[13] or "", r[14] or "") if r[13] or r[14] else "")
             for r in spans.rows]
    scored = reader.query(
        f"SELECT span_id, rule, scorer, status, coalesce(toString(value), label) AS value, passed, "
        f"if(status = 'scored', reason, concat(error_type, ': ', error_message)) AS reason, evaluation_trace_id "
        f"FROM {db}.scores_current {where(this)}ORDER BY rule")
    calls = load_judge_calls(reader, [r[7] for r in scored.rows])
    scores = [(r[0], ScoreLine(rule=r[1], scorer=r[2], status=r[3], value=r[4], passed=r[5], reason=r[6] or "",
                               evaluation_trace_id=r[7] or "", judge_calls=calls.get(r[7] or "", [])))
              for r in scored.rows]
    return info, build_tree(nodes, scores)
