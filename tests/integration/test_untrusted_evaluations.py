"""Issue 16, the trust boundary, through the real broker and worker: a span's async_evaluate request cannot
point a judge at its own endpoint or key, cannot make the worker import a module, and cannot grow the worker's
scorer cache past its bound; two requests on one span are two results."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from pipeline.sampling import sdk_rule
from tests.integration.harness import WorkerProcess, batch, produce, span
from tests.integration.test_metrics import metrics_url, scrape
from tests.support.openai_server import OpenAIServer

pytestmark = pytest.mark.integration

SECRET = "xoxb-the-workers-slack-token"
CACHE_BOUND = 40
DISTINCT_PARAMS = 10_000
SPANS_PER_TRACE = 500


def rules(judge_url: str) -> str:
    return f"""
rules:
  - name: errors
    scorer: error_spans
sdk_evaluations:
  scorers:
    - name: polite
      scorer: llm_scale
      params: {{question: "how polite is the reply", model: openai/gpt-4o-mini, api_base: "{judge_url}",
                api_key_env: OPERATOR_JUDGE_KEY}}
"""


def one_span_trace(trace_id: str, evaluations: list[dict]) -> tuple[bytes, bytes]:
    root = span(trace_id, "root", None, "handle", evaluations=evaluations)
    return trace_id.encode(), batch(trace_id, [root], final=True)


def request(scorer: str, params: dict | None = None, **example: object) -> dict:
    return {"scorer": scorer, "params": params or {}, "example": example or {"inputs": "q", "outputs": "a"}}


def test_hostile_evaluation_requests_are_refused_and_legitimate_ones_run(
        broker: str, tmp_path: Path, openai_server: OpenAIServer) -> None:
    trap = tmp_path / "imported"
    with OpenAIServer() as attacker:
        rule_file = tmp_path / "rules.yaml"
        rule_file.write_text(rules(openai_server.base_url))
        worker = WorkerProcess(tmp_path / "data", broker, rule_file, extra_env={
            "OPERATOR_JUDGE_KEY": "sk-operator", "STOLEN_SECRET": SECRET,
            "EVALSTREAM_TEST_IMPORT_TRAP": str(trap), "EVALSTREAM_SCORER_CACHE_SIZE": str(CACHE_BOUND),
        }).start()
        try:
            hostile = {
                "a" * 32: [request("llm_scale", {"question": "q", "api_base": attacker.base_url,
                                                 "api_key_env": "STOLEN_SECRET"})],
                "b" * 32: [request("llm_scale", {"question": "q", "api_base": attacker.base_url,
                                                 "api_key": SECRET})],
                "c" * 32: [request("polite", {"api_base": attacker.base_url, "api_key_env": "STOLEN_SECRET"})],
                "d" * 32: [request("polite", {"litellm_params": {"api_base": attacker.base_url}})],
                "e" * 32: [request("tests.integration.import_trap:Trap")],
            }
            legit = {"f" * 32: [request("polite", {"guidelines": ["be kind"]}, inputs="hi", outputs="hello!")],
                     "9" * 32: [request("json_output", {}, outputs='{"a": 1}'),
                                request("json_output", {}, outputs="not json")]}
            produce(broker, [one_span_trace(t, ev) for t, ev in {**hostile, **legit}.items()])

            ids = ", ".join(f"'{t}'" for t in [*hostile, *legit])
            worker.wait_for(lambda: worker.scalar(
                f"SELECT count() FROM evalstream.decisions_current WHERE startsWith(rule, 'sdk:') "
                f"AND trace_id IN ({ids}) AND outcome IN ('scored', 'failed')") == len(hostile) + 3,
                timeout_s=90, what="every request decided")

            refused = dict(worker.query(
                "SELECT trace_id, reason FROM evalstream.decisions_current WHERE startsWith(rule, 'sdk:') "
                f"AND trace_id IN ({', '.join(repr(t) for t in hostile)}) AND outcome = 'failed'"))
            assert set(refused) == set(hostile)
            assert all(reason.startswith("refused: ") for reason in refused.values()), refused
            assert "sdk_evaluations.scorers" in refused["a" * 32] and "'module:attr'" in refused["e" * 32]
            assert "api_base" in refused["c" * 32] and "litellm_params" in refused["d" * 32]
            assert attacker.requests == []  # not one request reached the span's endpoint
            assert not trap.exists()  # and the module it named was never imported

            # The listed judge ran once, at the operator's endpoint with the operator's key.
            (judged,) = openai_server.requests
            assert judged.headers.get("authorization") == "Bearer sk-operator"
            assert SECRET not in orjson.dumps(judged.body).decode()
            # Two requests with the same scorer on one span: two current scores, one passing, one failing.
            assert sorted(worker.query(
                f"SELECT request_index, passed FROM evalstream.scores_current WHERE trace_id = '{'9' * 32}' "
                f"AND rule = '{sdk_rule('json_output')}'")) == [[0, True], [1, False]]
            counted = scrape(metrics_url(worker))["evalstream_evaluation_requests_refused_total"]
            assert sum(counted.values()) == len(hostile)

            # 10,000 distinct params: every one scored, the scorer cache stays at its bound.
            traces = []
            for t in range(DISTINCT_PARAMS // SPANS_PER_TRACE):
                trace_id = f"{t:032x}"
                spans = [span(trace_id, "root", None, "handle")] + [
                    span(trace_id, f"s{i}", "root", evaluations=[request(
                        "json_output", {"schema": {"type": "object", "maxProperties": t * SPANS_PER_TRACE + i}},
                        outputs="{}")]) for i in range(SPANS_PER_TRACE)]
                traces.append((trace_id.encode(), batch(trace_id, spans, final=True)))
            started = time.monotonic()
            produce(broker, traces)
            worker.wait_for(lambda: worker.scalar(
                "SELECT count() FROM evalstream.scores_current WHERE rule = 'sdk:json_output' AND passed") ==
                DISTINCT_PARAMS + 1, timeout_s=180, what="every distinct request scored")
            gauges = scrape(metrics_url(worker))["evalstream_scorer_cache_entries"]
            assert 0 < max(gauges.values()) <= CACHE_BOUND, (gauges, time.monotonic() - started)
        finally:
            worker.stop()
