"""pipeline/views/judge_calls.py and its use in `traces show`: a judged score shows the judge's calls from its
evaluation trace, and an evaluation trace's own LLM and tool spans read as model, tokens, cost and a preview."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
from rich.console import Console

from pipeline.views.judge_calls import JudgeCallLine, load_judge_calls, preview
from pipeline.views.trace_tree import ScoreLine, SpanNode, build_tree, render


def text_of(title: str, roots: list[SpanNode]) -> str:
    console = Console(width=220, record=True)
    console.print(render(title, roots))
    return console.export_text()


def test_previews_say_what_an_llm_call_answered_and_what_a_tool_returned() -> None:
    llm = orjson.dumps({"text": None, "tool_calls": [{"id": "c1", "name": "get_spans",
                                                     "arguments": '{"span_ids":["ab"]}'}]}).decode()
    assert preview("llm", "", llm) == '→ get_spans({"span_ids":["ab"]})'
    assert preview("llm", "", '{"text": "The  reply\\nis polite.", "tool_calls": []}') == "The reply is polite."
    assert preview("tool", '{"pattern": "timed out"}', '{"matches": 2}') == '({"pattern":"timed out"}) → {"matches":2}'
    cut = '{"text": "' + "a" * 3000  # a stored text read only in part is not JSON: shown as it is, cut
    shown = preview("llm", "", cut, chars=50)
    assert len(shown) == 50 and shown.endswith("…")
    root = preview("evaluator", '{"trace_id": "t1", "trace_version": 2, "rule": "polite"}',
                   '{"status": "scored", "value": 1.0, "passed": true, "reason": "fine"}')
    assert root == "judged trace t1 v2 (polite): pass 1.0: fine"


def test_a_judged_score_shows_its_judge_calls_under_it() -> None:
    calls = [JudgeCallLine("chat openai/gpt-4o-mini", "llm", "openai/gpt-4o-mini", 812, 31, 0.000141, 250.0, "ok",
                           "→ get_trace_info({})"),
             JudgeCallLine("get_trace_info", "tool", "", None, None, None, 0.4, "ok", '({}) → {"span_count":40}'),
             JudgeCallLine("chat openai/gpt-4o-mini", "llm", "openai/gpt-4o-mini", 0, 0, None, 2.0, "error", "")]
    score = ScoreLine(rule="tools-ok", scorer="agent_judge", status="scored", value=1.0, passed=True, reason="fine",
                      evaluation_trace_id="e" * 32, judge_calls=calls)
    roots = build_tree([SpanNode("root", "", "handle", "agent", "", 5.0, "ok", 0)], [("", score)])
    text = text_of("trace t1", roots)
    assert "◆ tools-ok (agent_judge): pass 1.0 — fine" in text
    assert f"judge trace {'e' * 32}" in text
    assert "↳ chat openai/gpt-4o-mini llm · openai/gpt-4o-mini · 812→31 tok · $0.000141 · 250.0 ms — → get_trace_info({})" in text
    assert '↳ get_trace_info tool · 0.4 ms — ({}) → {"span_count":40}' in text
    assert "2.0 ms · error" in text


def test_an_evaluation_trace_reads_as_model_tokens_cost_and_previews() -> None:
    nodes = [SpanNode("r", "", "evaluate polite", "evaluator", "llm_criteria", 300.0, "ok", 0,
                      preview="judged trace t1 v1 (polite): pass"),
             SpanNode("c", "r", "chat m", "llm", "llm_criteria", 250.0, "ok", 1, model="m", input_tokens=10,
                      output_tokens=2, cost_usd=0.5, preview="→ submit_verdicts({})")]
    text = text_of("trace e", build_tree(nodes, []))
    assert "evaluate polite evaluator · agent llm_criteria · 300.0 ms · ok — judged trace t1 v1 (polite): pass" in text
    assert "chat m llm · agent llm_criteria · m · 10→2 tok · $0.500000 · 250.0 ms · ok — → submit_verdicts({})" in text


def test_judge_calls_are_read_bounded_for_the_scores_evaluation_traces_only() -> None:
    asked: list[str] = []

    def query(sql: str) -> Any:
        asked.append(sql)
        return SimpleNamespace(rows=[["e1", "chat m", "llm", "m", 5, 1, None, 3.0, "ok", "", '{"text": "ok"}']])

    reader = SimpleNamespace(database="evalstream", query=query)
    assert load_judge_calls(reader, ["", ""]) == {} and asked == []  # no evaluation trace, no query
    got = load_judge_calls(reader, ["e1", "", "e1"])  # type: ignore[arg-type]
    (sql,) = asked
    assert "trace_id IN ('e1')" in sql and "LIMIT 30 BY trace_id" in sql and "substring(outputs, 1, 2000)" in sql
    assert got["e1"][0].preview == "ok" and got["e1"][0].input_tokens == 5
