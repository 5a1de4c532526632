"""pipeline/worker/evaluation_traces.py: a judged job's evaluation trace goes to the spans topic, keyed by its
id, before its result links it; a job without judge calls sends none; a failed send drops only the link."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pipeline import topics
from pipeline.contracts import ScoreJob, SpanBatch, Trace, decode
from pipeline.contracts.evaluation_traces import evaluation_trace_id
from pipeline.metrics import Counters
from pipeline.scoring import RetryPolicy, ScorerCache, run_job
from pipeline.settings import Settings
from pipeline.worker.evaluation_traces import EvaluationTraces
from scorers.testing import ScriptedJudgeClient, resolver

TRACE = Trace.model_validate({"trace_id": "t1", "version": 1, "project": "bot", "status": "complete",
                              "close_reason": "quiet_period", "root_span_id": "r", "spans": [
                                  {"trace_id": "t1", "span_id": "r", "name": "reply", "start_ns": 0, "end_ns": 5,
                                   "inputs": {"q": "hi"}, "outputs": {"a": "hello"}, "project": "bot"}]})


class FakeContext(SimpleNamespace):
    def __init__(self, fail: bool = False, **settings: Any) -> None:
        super().__init__(settings=Settings(**settings), counters=Counters(), sent=[], fail=fail)

    async def send(self, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.sent.append((topic, key, value))


def job(rule: str, scorer: str, params: dict[str, Any] | None = None) -> ScoreJob:
    return ScoreJob(job_id=ScoreJob.make_id(rule, "t1", 1), rule=rule, scorer=scorer, params=params or {},
                    trace_id="t1", trace_version=1)


@pytest.fixture
def client() -> ScriptedJudgeClient:
    client = ScriptedJudgeClient()
    client.reply(tool_calls=[("submit_verdicts", {"criteria": {"c1": {"verdict": "true", "reason": "polite"}}})],
                 input_tokens=321, output_tokens=9, cost_usd=0.0004)
    return client


async def run(ctx: FakeContext, client: ScriptedJudgeClient, the_job: ScoreJob) -> Any:
    cache = ScorerCache(resolver(client))
    return await EvaluationTraces(ctx).run(lambda: run_job(the_job, TRACE, cache, RetryPolicy(max_attempts=1)))  # type: ignore[arg-type]


async def test_a_judged_job_sends_its_evaluation_trace_and_links_it(client: ScriptedJudgeClient) -> None:
    ctx = FakeContext()
    the_job = job("polite", "llm_criteria", {"criteria": ["The reply is polite"]})
    outcome = await run(ctx, client, the_job)
    trace_id = evaluation_trace_id(the_job.job_id)
    assert outcome.result.status == "scored" and outcome.result.evaluation_trace_id == trace_id
    ((topic, key, value),) = ctx.sent
    assert topic == topics.SPANS and key == trace_id
    batch = decode(value, SpanBatch)
    assert batch.final and [s.span_type for s in batch.spans] == ["evaluator", "llm"]
    assert batch.spans[1].input_tokens == 321 and batch.spans[1].cost_usd == 0.0004
    assert batch.spans[0].attributes["evalstream.evaluated_trace_id"] == "t1"
    assert ctx.counters.get("evaluation_traces", outcome="sent") == 1


async def test_a_job_without_judge_calls_sends_nothing(client: ScriptedJudgeClient) -> None:
    ctx = FakeContext()
    outcome = await run(ctx, client, job("fast", "trace_latency", {"max_ms": 100}))
    assert outcome.result.status == "scored" and outcome.result.evaluation_trace_id is None and ctx.sent == []


async def test_a_trace_that_cannot_be_sent_leaves_the_score_without_a_link(client: ScriptedJudgeClient) -> None:
    ctx = FakeContext(fail=True)
    outcome = await run(ctx, client, job("polite", "llm_criteria", {"criteria": ["The reply is polite"]}))
    assert outcome.result.status == "scored" and outcome.result.evaluation_trace_id is None
    assert ctx.counters.get("evaluation_traces", outcome="failed") == 1


async def test_evaluation_traces_can_be_turned_off(client: ScriptedJudgeClient) -> None:
    ctx = FakeContext(judge_evaluation_traces=False)
    outcome = await run(ctx, client, job("polite", "llm_criteria", {"criteria": ["The reply is polite"]}))
    assert outcome.result.evaluation_trace_id is None and ctx.sent == []
