"""The agent judge's view of a trace, without an LLM: inline and skeleton renderings, and the trace tools."""

from __future__ import annotations

import logging
import re

import orjson
import pytest

from pipeline.contracts import Span, Trace
from scorers.judges import trace_tools
from scorers.judges.span_tree import SpanTree, render_value
from scorers.judges.tokens import estimate_tokens
from scorers.judges.trace_toolbox import TOOL_NAMES, TOOL_SCHEMAS, TraceToolbox
from scorers.judges.trace_view import render_skeleton, render_trace
from tests.support.judge_traces import FAILED_URL, FAILURE_MESSAGE, agent_trace


@pytest.fixture(scope="module")
def big() -> Trace:
    return agent_trace(300)


@pytest.fixture(scope="module")
def tree(big: Trace) -> SpanTree:
    return SpanTree(big)


def failed_span(trace: Trace) -> Span:
    return next(s for s in trace.spans if s.status == "error")


def span(span_id: str, parent: str | None = None, name: str = "step", start: int = 0, **fields: object) -> Span:
    return Span(trace_id="t1", span_id=span_id, parent_span_id=parent, name=name, start_ns=start,
                end_ns=start + 1_000_000, **fields)


def small_trace(*spans: Span) -> Trace:
    return Trace(trace_id="t1", version=1, status="complete", close_reason="quiet_period",
                 root_span_id=spans[0].span_id, start_ns=0, end_ns=10_000_000, spans=list(spans))


# -- the tree ---------------------------------------------------------------------------------------

def test_the_tree_orders_children_by_start_and_makes_orphans_roots() -> None:
    trace = small_trace(span("root0000a", start=0), span("child000b", "root0000a", start=5),
                        span("child000a", "root0000a", start=2), span("orphan00c", "missing", start=1))
    tree = SpanTree(trace)
    assert [(s.span_id, d) for s, d in tree.walk()] == [
        ("root0000a", 0), ("child000a", 1), ("child000b", 1), ("orphan00c", 0)]
    assert tree.subtree_sizes["root0000a"] == 3


def test_short_ids_grow_until_every_span_is_told_apart_and_prefixes_resolve() -> None:
    trace = small_trace(span("abcdef0123"), span("abcdef0199", "abcdef0123"))
    tree = SpanTree(trace)
    assert tree.id_chars == 9  # 8 chars would be "abcdef01" for both
    assert tree.resolve("abcdef019").span_id == "abcdef0199"
    assert tree.resolve("[abcdef0123]").span_id == "abcdef0123"
    assert tree.resolve("abcdef01") is None  # ambiguous
    assert tree.resolve("") is None


def test_a_parent_cycle_in_bad_input_does_not_loop() -> None:
    trace = small_trace(span("aaaaaaaa1", "bbbbbbbb2"), span("bbbbbbbb2", "aaaaaaaa1"), span("root00003"))
    assert [s.span_id for s, _ in SpanTree(trace).walk()] == ["root00003"]


def test_render_value_caps_long_payloads_and_says_how_much_was_cut() -> None:
    assert render_value({"a": 1}, 100) == '{"a":1}'
    assert render_value("x" * 50, 10) == "x" * 10 + "… [40 more chars]"


# -- renderings -------------------------------------------------------------------------------------

def test_the_inline_rendering_has_every_span_and_its_payloads(big: Trace) -> None:
    text = render_trace(big)
    assert all(f"[{s.span_id[:8]}]" in text for s in big.spans)
    assert "Can I get a refund on an order shipped to Germany" in text
    assert FAILURE_MESSAGE in text and "ERROR TimeoutError" in text


def test_the_skeleton_has_structure_but_no_payloads(big: Trace, tree: SpanTree) -> None:
    text = render_skeleton(big)
    assert "Germany" not in text and "refunded within 30 days" not in text and "docs.example.com/p/" not in text
    # error messages are the one thing shown besides structure: listed once, cut at 120 chars
    assert text.count(FAILED_URL) == 1 and f"(TimeoutError: {FAILURE_MESSAGE})" in text
    root, fail = big.root, failed_span(big)
    assert root is not None
    assert f"[{tree.short_id(root)}] support_request · agent · " in text and "agent=planner" in text
    # an agent is named where it changes, not on every span
    assert f"[{tree.short_id(fail)}] fetch_page · tool · 30000 ms · ERROR TimeoutError" in text
    assert text.count("agent=researcher") == 1
    # the researcher's loop is folded into runs on either side of the failed call, which stays on its own line
    assert text.count("repeating: call_llm (llm) -> fetch_page (tool)") == 2
    assert "299 spans" not in text and "300 spans: 149 llm" in text
    assert estimate_tokens(text) < estimate_tokens(render_trace(big)) / 50


def test_the_skeleton_indents_children_under_their_parent(big: Trace, tree: SpanTree) -> None:
    lines = render_skeleton(big).splitlines()
    research = next(i for i, line in enumerate(lines) if "] research · agent" in line)
    assert lines[research].startswith("  [")  # a child of the root
    assert lines[research + 1].startswith("    [")  # its own children one level deeper


def test_siblings_that_differ_are_not_folded() -> None:
    root = span("root00000", name="root")
    kids = [span(f"kid{i:06d}", "root00000", name=f"tool_{i}", start=i + 1) for i in range(5)]
    text = render_skeleton(small_trace(root, *kids))
    assert "×" not in text and all(f"tool_{i}" in text for i in range(5))


def test_runs_of_one_shape_fold_from_three_and_an_error_breaks_them() -> None:
    root = span("root00000", name="root")
    same = [span(f"kid{i:06d}", "root00000", name="fetch", start=i + 1) for i in range(6)]
    same[3] = same[3].model_copy(update={"status": "error"})
    text = render_skeleton(small_trace(root, *same))
    assert "[kid000000 … kid000002] ×3 fetch · function" in text
    assert "[kid000003] fetch · function · 1 ms · ERROR" in text
    assert "×2" not in text  # two alike after the error stay as two lines
    assert "[kid000004]" in text and "[kid000005]" in text


def test_an_oversized_skeleton_keeps_the_top_and_says_what_it_hides() -> None:
    trace = agent_trace(40, failed_tool=False)
    unfolded = trace.model_copy(update={"spans": [
        s.model_copy(update={"name": f"{s.name}_{i}"}) for i, s in enumerate(trace.spans)]})  # nothing repeats
    hidden = re.compile(r" · \+(\d+) children not shown")
    full = render_skeleton(unfolded, max_tokens=100_000)
    assert not hidden.search(full) and all(f"] {s.name} · " in full for s in unfolded.spans)
    small = render_skeleton(unfolded, max_tokens=500)
    assert estimate_tokens(small) <= 500 < estimate_tokens(full)
    tree = SpanTree(unfolded)
    for top in [unfolded.root, *tree.children_of(unfolded.root_span_id or "")]:
        assert top is not None and f"] {top.name} · " in small  # the first two levels always show
    research = next(s for s in unfolded.spans if s.name.startswith("research"))
    line = next(line for line in small.splitlines() if f"] {research.name} · " in line)
    shown = sum(f"] {kid.name} · " in small for kid in tree.children_of(research.span_id))
    assert 0 < shown < 35 and hidden.search(line).group(1) == str(35 - shown)  # type: ignore[union-attr]
    root_line = next(line for line in small.splitlines() if "] support_request_0 · " in line)
    assert not hidden.search(root_line)  # all of the root's children are there
    tiny = render_skeleton(unfolded, max_tokens=150)
    assert estimate_tokens(tiny) <= 150 and f"] {unfolded.root.name} · " in tiny  # type: ignore[union-attr]


# -- tools ------------------------------------------------------------------------------------------

def test_trace_info_counts(tree: SpanTree) -> None:
    info = trace_tools.trace_info(tree)
    assert info["span_count"] == 300 and info["error_count"] == 1
    assert info["spans_by_type"]["llm"] == 149 and info["agents"] == ["planner", "researcher"]
    assert info["models"] == ["gpt-4o-mini"] and info["root_span_id"] == tree.short_id(tree.trace.root)
    assert info["max_depth"] == 2


def test_list_spans_filters_and_pages(tree: SpanTree, big: Trace) -> None:
    first = trace_tools.list_spans(tree, span_type="tool", limit=100)
    assert first["total"] == 147 and len(first["spans"]) == 100 and first["next_offset"] == 100
    rest = trace_tools.list_spans(tree, span_type="tool", offset=100, limit=100)
    assert len(rest["spans"]) == 47 and rest["next_offset"] is None
    assert {s["span_id"] for s in first["spans"]}.isdisjoint({s["span_id"] for s in rest["spans"]})
    errors = trace_tools.list_spans(tree, status="error")
    assert [s["error"] for s in errors["spans"]] == ["TimeoutError"]
    root = big.root
    assert root is not None
    children = trace_tools.list_spans(tree, parent_id=tree.short_id(root))
    assert [s["name"] for s in children["spans"]] == ["plan", "search_kb", "research", "write_answer"]
    assert trace_tools.list_spans(tree, name="WRITE")["total"] == 1
    assert trace_tools.list_spans(tree, agent="planner", span_type="llm")["total"] == 2
    assert trace_tools.list_spans(tree, limit=10_000)["spans"].__len__() == trace_tools.LIST_MAX
    assert "error" in trace_tools.list_spans(tree, parent_id="nope")


def test_get_spans_by_id_or_prefix_with_capped_payloads(tree: SpanTree, big: Trace) -> None:
    fail = failed_span(big)
    llm = next(s for s in big.spans if s.name == "call_llm")
    out = trace_tools.get_spans(tree, [fail.span_id[:10], llm.span_id, "doesnotexist"], max_chars=100)
    got = {s["name"]: s for s in out["spans"]}
    assert out["missing"] == ["doesnotexist"]
    assert got["fetch_page"]["error"] == {"type": "TimeoutError", "message": FAILURE_MESSAGE}
    assert got["fetch_page"]["full_span_id"] == fail.span_id and FAILED_URL in got["fetch_page"]["inputs"]
    assert got["call_llm"]["inputs"].endswith("more chars]") and len(got["call_llm"]["inputs"]) < 130
    assert got["call_llm"]["model"] == "gpt-4o-mini"
    many = trace_tools.get_spans(tree, [s.span_id for s in big.spans[:12]])
    assert len(many["spans"]) == 10 and len(many["not_fetched"]) == 2
    assert "error" in trace_tools.get_spans(tree, [])


def test_search_finds_regex_matches_with_context_and_is_bounded(tree: SpanTree, big: Trace) -> None:
    fail = failed_span(big)
    found = trace_tools.search_trace(tree, r"timed out after \d+s")
    assert found["spans_matched"] == 1 and not found["truncated"]
    (match,) = found["matches"]
    assert match["span_id"] == tree.short_id(fail) and match["field"] == "error"
    assert "[[timed out after 30s]]" in match["context"] and match["context"].startswith("TimeoutError: upstream ")
    flood = trace_tools.search_trace(tree, "refund", max_matches=7)
    assert len(flood["matches"]) == 7 and flood["truncated"]
    names_only = trace_tools.search_trace(tree, "^fetch_page$", fields=["name"], max_matches=100)
    assert len(names_only["matches"]) == 100 and {m["field"] for m in names_only["matches"]} == {"name"}
    assert trace_tools.search_trace(tree, "REFUNDS/EU")["matches"][0]["field"] == "inputs"  # case-insensitive
    assert "invalid regular expression" in trace_tools.search_trace(tree, "([")["error"]
    assert "error" in trace_tools.search_trace(tree, "x", fields=["nope"])


def test_the_toolbox_runs_calls_reports_bad_ones_and_logs_with_the_trace_id(
        big: Trace, caplog: pytest.LogCaptureFixture) -> None:
    assert {t["function"]["name"] for t in TOOL_SCHEMAS} == TOOL_NAMES == {
        "get_trace_info", "list_spans", "get_spans", "search_trace"}
    box = TraceToolbox(big, result_chars=2000)
    with caplog.at_level(logging.DEBUG, logger="scorers.judges.trace_toolbox"):
        info = orjson.loads(box.run("get_trace_info", "{}", step=1))
        bad_json = orjson.loads(box.run("list_spans", "{not json", step=1))
        unknown_arg = orjson.loads(box.run("list_spans", '{"colour": "red"}', step=2))
        unknown_tool = orjson.loads(box.run("delete_trace", "{}", step=2))
        long = box.run("list_spans", '{"limit": 200}', step=3)
        searched = orjson.loads(box.run("search_trace", '{"pattern": "timed out", "fields": ["error"]}', step=3))
    assert info["trace_id"] == big.trace_id
    assert "bad arguments" in bad_json["error"] and "colour" in unknown_arg["error"]
    assert "unknown tool" in unknown_tool["error"]
    assert len(long) < 2100 and long.endswith("page or narrow the query]")
    assert [m["field"] for m in searched["matches"]] == ["error"]
    assert [(c.step, c.name, c.error is None) for c in box.calls] == [
        (1, "get_trace_info", True), (1, "list_spans", False), (2, "list_spans", False),
        (2, "delete_trace", False), (3, "list_spans", True), (3, "search_trace", True)]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 6 and all(big.trace_id in m for m in logged) and "get_trace_info({})" in logged[0]
