"""pipeline/views: the span tree of `traces show` (the SQL of `traces list`: test_storage_filters.py)."""

from __future__ import annotations

from rich.console import Console

from pipeline.views.trace_tree import ScoreLine, SpanNode, build_tree, render


def node(span_id: str, parent: str = "", start: int = 0, **kw: object) -> SpanNode:
    fields = {"name": span_id, "span_type": "function", "agent": "", "duration_ms": 1.0, "status": "ok"}
    return SpanNode(span_id=span_id, parent_span_id=parent, start=start, **{**fields, **kw})  # type: ignore[arg-type]


def score(rule: str, passed: bool | None = False) -> ScoreLine:
    return ScoreLine(rule=rule, scorer="s", status="scored", value=0.0, passed=passed, reason=f"{rule} says so")


def test_children_sit_under_their_parents_in_start_order_and_scores_on_their_span() -> None:
    roots = build_tree(
        [node("tool2", "agent", start=3), node("root"), node("agent", "root", start=1), node("tool1", "agent", start=2)],
        [("tool2", score("tool-ok")), ("", score("trace-level", True))])
    (root,) = roots
    assert [c.span_id for c in root.children] == ["agent"]
    assert [c.span_id for c in root.children[0].children] == ["tool1", "tool2"]
    assert [s.rule for s in root.scores] == ["trace-level"]  # no span: attached to the root
    assert [s.rule for s in root.children[0].children[1].scores] == ["tool-ok"]


def test_a_span_whose_parent_is_missing_is_shown_as_a_root_not_hidden() -> None:
    roots = build_tree([node("root"), node("orphan", "never-arrived", start=5)], [])
    assert [r.span_id for r in roots] == ["root", "orphan"]


def test_the_rendered_tree_shows_agent_duration_status_and_verdicts() -> None:
    roots = build_tree([node("root", agent="planner", duration_ms=12.34),
                        node("search", "root", start=1, status="error", error="timeout [x]")],
                       [("search", score("tool-errors"))])
    console = Console(width=200, record=True)
    console.print(render("trace t1", roots))
    text = console.export_text()
    assert "agent planner · 12.3 ms · ok" in text
    assert "search function · 1.0 ms · error · timeout [x]" in text  # markup in data is escaped, not eaten
    assert "◆ tool-errors (s): fail 0.0 — tool-errors says so" in text
