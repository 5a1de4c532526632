"""A job's judge activity -> its evaluation trace (pipeline/scoring/evaluation_trace.py): what the spans say,
and the bounds that keep a judge of hundreds of calls or huge prompts within one message."""

from __future__ import annotations

import json

from pipeline.contracts import ScoreResult, SpanBatch, decode, encode
from pipeline.contracts.evaluation_traces import JUDGE_PROJECT, evaluation_trace_id
from pipeline.scoring.evaluation_trace import TRUNCATED, EvaluationTraceLimits, build_evaluation_trace
from scorers.judges.agent_judge import AgentJudge
from scorers.judges.records import (
    JudgeCall,
    RetryRecord,
    ToolCallRequest,
    TraceToolCall,
    recording_judge_activity,
)
from scorers.testing import ScriptedJudgeClient
from tests.support.judge_traces import agent_trace

T0 = 1_750_000_000.0


def result(**kw: object) -> ScoreResult:
    fields = {"job_id": "job-1", "rule": "tools-ok", "scorer": "agent_judge", "trace_id": "t-evaluated",
              "trace_version": 2, "status": "scored", "value": 1.0, "passed": True, "reason": "all fine"}
    return ScoreResult.model_validate({**fields, **kw})


def call(i: int, prompt: str = "look", **kw: object) -> JudgeCall:
    fields: dict = {"model": "openai/gpt-4o-mini", "messages": [{"role": "system", "content": "judge"},
                                                                 {"role": "user", "content": prompt}],
                    "tool_names": ["get_spans", "submit_verdicts"], "tool_choice": "required",
                    "response_text": None, "tool_calls": [ToolCallRequest(f"c{i}", "get_spans", '{"span_ids":["a"]}')],
                    "input_tokens": 100 + i, "output_tokens": 7, "cost_usd": 0.0002, "latency_ms": 250.0,
                    "attempts": 1, "started_at": T0 + i}
    return JudgeCall(**{**fields, **kw})


def tool(i: int, result_text: str = '{"spans": []}', **kw: object) -> TraceToolCall:
    fields: dict = {"step": i, "name": "get_spans", "arguments": {"span_ids": ["a"]}, "result_chars": len(result_text),
                    "ms": 1.5, "result": result_text, "started_at": T0 + i + 0.5}
    return TraceToolCall(**{**fields, **kw})


def build(entries: list, limits: EvaluationTraceLimits | None = None, **kw: object) -> SpanBatch:
    return build_evaluation_trace(evaluation_trace_id("job-1"), result(**kw), entries,
                                  started_ns=int(T0 * 1e9) - 1000, ended_ns=int((T0 + 10) * 1e9),
                                  limits=limits or EvaluationTraceLimits())


def test_the_trace_id_is_derived_from_the_job_so_a_rerun_sends_the_same_trace() -> None:
    assert evaluation_trace_id("job-1") == evaluation_trace_id("job-1") != evaluation_trace_id("job-2")
    assert len(evaluation_trace_id("job-1")) == 32
    first, again = build([call(1), tool(1)]), build([call(1), tool(1)])
    assert [s.span_id for s in first.spans] == [s.span_id for s in again.spans]


def test_one_span_per_model_call_and_tool_run_under_a_root_for_the_job() -> None:
    long_prompt = "x" * 5000  # the metadata keeps 2,000 characters of it; the trace keeps it whole
    batch = build([call(1, long_prompt), tool(1, '{"spans": ["a"]}'), call(2, response_text="done", tool_calls=[])])
    assert batch.final and batch.trace_id == evaluation_trace_id("job-1")
    root, llm1, run, llm2 = batch.spans
    assert {s.project for s in batch.spans} == {JUDGE_PROJECT}
    assert root.is_root and root.span_type == "evaluator" and root.name == "evaluate tools-ok"
    assert {s.parent_span_id for s in (llm1, run, llm2)} == {root.span_id}
    assert root.attributes["evalstream.evaluated_trace_id"] == "t-evaluated"
    assert root.attributes["evalstream.evaluated_trace_version"] == 2
    assert root.attributes["evalstream.judge.calls"] == 2 and root.attributes["evalstream.judge.tool_calls"] == 1
    assert root.outputs["passed"] is True and root.outputs["reason"] == "all fine"
    assert root.start_ns <= llm1.start_ns and root.end_ns >= llm2.end_ns
    assert llm1.span_type == "llm" and llm1.model == "openai/gpt-4o-mini" and llm1.name == "chat openai/gpt-4o-mini"
    assert (llm1.input_tokens, llm1.output_tokens, llm1.total_tokens, llm1.cost_usd) == (101, 7, 108, 0.0002)
    assert llm1.duration_ms == 250.0 and llm1.attributes["evalstream.judge.attempts"] == 1
    assert llm1.inputs["messages"][1]["content"] == long_prompt and TRUNCATED not in llm1.attributes
    assert llm1.outputs["tool_calls"] == [{"id": "c1", "name": "get_spans", "arguments": '{"span_ids":["a"]}'}]
    assert llm2.outputs["text"] == "done"
    assert run.span_type == "tool" and run.name == "get_spans" and run.inputs == {"span_ids": ["a"]}
    assert run.outputs == '{"spans": ["a"]}' and run.attributes["evalstream.judge.step"] == 1
    assert decode(encode(batch), SpanBatch) == batch  # it validates as it will be read


def test_failed_calls_and_retries_are_error_spans_and_a_failed_job_an_error_root() -> None:
    failed = call(1, error="RateLimitError 429: slow down", attempts=3, input_tokens=0, output_tokens=0, cost_usd=None,
                  retries=[RetryRecord(1, "RateLimitError 429", 429, 0.5, 0.5), RetryRecord(2, "x", 500, 1.0, None)])
    batch = build([failed], status="error", value=None, passed=None, error_type="JudgeRetriesExhausted",
                  error_message="gave up after 3 attempts")
    root, llm = batch.spans
    assert root.status == "error" and root.error is not None and root.error.type == "JudgeRetriesExhausted"
    assert llm.status == "error" and llm.error is not None and "429" in llm.error.message
    assert llm.attributes["evalstream.judge.attempts"] == 3 and llm.cost_usd is None
    assert [r["status"] for r in llm.attributes["evalstream.judge.retries"]] == [429, 500]


def test_texts_are_cut_with_a_marker_and_deep_values_kept_as_json_text() -> None:
    deep: object = "bottom"
    for _ in range(200):
        deep = {"d": deep}
    limits = EvaluationTraceLimits(text_chars=1000)
    batch = build([call(1, "y" * 3000), tool(1, "z" * 1500, arguments={"deep": deep})], limits)
    _, llm, run = batch.spans
    assert llm.inputs["messages"][1]["content"] == "y" * 1000 + "… [2000 more chars]"
    assert llm.attributes[TRUNCATED] == 1000 and run.attributes[TRUNCATED] == 1000
    assert run.outputs.endswith("… [500 more chars]")
    assert decode(encode(batch), SpanBatch).spans[2].inputs["deep"]  # within SpanBatch.max_depth


def test_hundreds_of_calls_with_huge_prompts_fit_the_message_limit_without_failing() -> None:
    entries: list = []
    for i in range(400):
        entries += [call(i, "p" * 50_000), tool(i, "r" * 12_000)]
    limits = EvaluationTraceLimits(max_bytes=300_000)
    batch = build(entries, limits)
    raw = encode(batch)
    assert len(raw) <= limits.max_bytes
    root = batch.spans[0]
    kept = len(batch.spans) - 1
    assert kept <= limits.max_spans and root.attributes["evalstream.judge.spans_dropped"] == len(entries) - kept
    assert all(TRUNCATED in s.attributes for s in batch.spans[1:])
    assert decode(raw, SpanBatch, max_bytes=limits.max_bytes) == batch


def test_even_a_root_too_big_for_the_limit_gives_a_valid_trace() -> None:
    batch = build([call(1)], EvaluationTraceLimits(max_bytes=100), reason="r" * 100_000)
    assert [s.span_type for s in batch.spans] == ["evaluator"]
    assert batch.spans[0].attributes["evalstream.judge.spans_dropped"] == 1


async def test_an_agent_judge_run_inside_a_recording_leaves_its_calls_and_tool_runs_in_order() -> None:
    client = ScriptedJudgeClient()
    client.reply(tool_calls=[("get_trace_info", {})], input_tokens=900, output_tokens=12, cost_usd=0.001)
    verdict = {"criteria": {"c1": {"verdict": "true", "reason": "fine"}}, "summary": "fine"}
    client.reply(tool_calls=[("submit_verdicts", verdict)], input_tokens=1200, output_tokens=30, cost_usd=0.002)
    judge = AgentJudge(instructions="Judge {trace}", criteria=["ok"], inline_tokens=0, client=client)
    with recording_judge_activity() as activity:
        score = await judge.run(agent_trace(40))
    assert score.passed is True
    first, info, second = activity.entries
    assert isinstance(first, JudgeCall) and isinstance(info, TraceToolCall) and isinstance(second, JudgeCall)
    assert info.name == "get_trace_info" and json.loads(info.result)["span_count"] == 40
    assert (first.input_tokens, second.cost_usd) == (900, 0.002)
    batch = build(activity.entries)
    assert [s.span_type for s in batch.spans] == ["evaluator", "llm", "tool", "llm"]
    assert "tool_calls" in score.metadata["judge"] and "result" not in score.metadata["judge"]["tool_calls"][0]
    with recording_judge_activity() as other:  # outside a recording nothing is kept; each has its own
        pass
    assert not other
