"""scorers/testing.py, and how judges get their client and defaults: from the resolver that builds them,
configured once from Settings (EVALSTREAM_JUDGE_*), never from module state."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from pipeline.contracts import Example, ScoreJob, Trace
from pipeline.scoring.judges import judge_config
from pipeline.scoring.runner import RetryPolicy, ScorerCache, run_job
from pipeline.settings import Settings
from scorers.judges import CriteriaJudge
from scorers.judges.client import JudgeClient
from scorers.judges.config import DEFAULT_MODEL, JudgeConfig
from scorers.judges.errors import JudgeConfigError, JudgeRequestError
from scorers.testing import ScriptedJudgeClient, resolver

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ASK = Example(inputs="How long do refunds take?", outputs="Five business days.")


def met(*verdicts: str) -> tuple[str, dict]:
    return ("submit_verdicts", {"criteria": {f"c{i + 1}": {"verdict": v, "reason": "r"} for i, v in enumerate(verdicts)},
                                "summary": "s"})


async def test_a_judge_built_by_the_kit_answers_from_the_script() -> None:
    client = ScriptedJudgeClient()
    client.reply(tool_calls=[met("true", "false")], input_tokens=30, output_tokens=7)
    judge = resolver(client).build("llm_criteria", {"criteria": ["Answers", "Cites the policy"]})
    score = await judge.run(ASK)
    assert score.passed is False and score.value == 0.5
    (request,) = client.requests
    assert request.model == DEFAULT_MODEL and request.tool_choice["function"]["name"] == "submit_verdicts"
    assert score.metadata["judge"]["input_tokens"] == 30
    with pytest.raises(JudgeRequestError, match="nothing scripted for request 2"):
        await judge.run(ASK)  # the test sees a call it did not expect


async def test_the_kit_client_retries_what_the_real_client_retries() -> None:
    client = ScriptedJudgeClient()
    client.fail(TimeoutError())
    client.reply(tool_calls=[met("true")])
    score = await CriteriaJudge(criteria=["Answers"], client=client).run(ASK)
    assert score.passed is True and len(client.requests) == 2
    assert score.metadata["judge"]["calls"][0]["attempts"] == 2


def test_judges_built_by_one_resolver_share_its_client_and_a_rule_cannot_give_one() -> None:
    scorers = resolver()
    a = scorers.build("llm_criteria", {"criteria": ["a"]})
    b = scorers.build("helpfulness", {})
    assert a.client is b.client is scorers.judge_client
    assert CriteriaJudge(criteria=["a"]).client is not scorers.judge_client  # built alone: a client of its own
    with pytest.raises(TypeError, match="'client' is not a param"):
        scorers.build("llm_criteria", {"criteria": ["a"], "client": "x"})
    assert scorers.build("error_spans", {}).name == "error_spans"  # code scorers get no client


def test_a_judge_takes_its_defaults_from_its_clients_config_and_a_rule_beats_them() -> None:
    config = JudgeConfig(model="openai/house", api_base="http://judge.internal/v1", api_key="house-key",
                         variables={"TEAM_KEY": "team-key"})
    client = JudgeClient(config)
    plain = CriteriaJudge(criteria=["a"], client=client)
    assert (plain.model, plain.api_base, plain.api_key) == ("openai/house", "http://judge.internal/v1", "house-key")
    ruled = CriteriaJudge(criteria=["a"], client=client, model="openai/other", api_key_env="TEAM_KEY")
    assert (ruled.model, ruled.api_key) == ("openai/other", "team-key")
    with pytest.raises(JudgeConfigError, match="'NOT_SET', which is not set"):
        CriteriaJudge(criteria=["a"], client=client, api_key_env="NOT_SET")


def test_the_judge_config_comes_from_the_evalstream_judge_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"MODEL": "openai/m", "API_BASE": "http://b/v1", "API_KEY": "k", "MAX_CONCURRENCY": "3",
                        "REQUESTS_PER_MINUTE": "60", "TOKENS_PER_MINUTE": "9000", "TIMEOUT_S": "7",
                        "MAX_ATTEMPTS": "2", "CACHE_SIZE": "0", "SEND_SPACING_MS": "10"}.items():
        monkeypatch.setenv(f"EVALSTREAM_JUDGE_{name}", value)
    config = judge_config(Settings(), variables={"K": "v"})
    assert (config.model, config.api_base, config.api_key) == ("openai/m", "http://b/v1", "k")
    assert (config.limits.max_concurrency, config.limits.requests_per_minute, config.limits.tokens_per_minute) == (
        3, 60, 9000)
    assert (config.retry.timeout_s, config.retry.max_attempts, config.cache_size) == (7, 2, 0)
    assert config.send_spacing_s == pytest.approx(0.01) and config.variable("K") == "v"
    client = JudgeClient(config)
    assert (client.cache_size, client.retry.max_attempts, client.default_limits.max_concurrency) == (0, 2, 3)


def test_unset_judge_variables_keep_the_clients_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("EVALSTREAM_JUDGE_")]:
        monkeypatch.delenv(name)
    config = judge_config(Settings(), variables={})
    assert config == JudgeConfig()


async def test_the_runner_builds_judges_through_its_resolver() -> None:
    client = ScriptedJudgeClient()
    client.reply(tool_calls=[met("true")])
    trace = Trace(trace_id="t1", version=1, status="complete", close_reason="quiet_period")
    job = ScoreJob(job_id="j", rule="r", scorer="llm_criteria", params={"criteria": ["a"]}, trace_id="t1",
                   trace_version=1, example=ASK)
    outcome = await run_job(job, trace, ScorerCache(resolver(client)), RetryPolicy(max_attempts=1))
    assert outcome.result.status == "scored" and outcome.result.passed is True and len(client.requests) == 1


async def test_the_package_inquiry_example_runs_on_the_client_it_is_given() -> None:
    spec = importlib.util.spec_from_file_location("package_inquiry", EXAMPLES / "package_inquiry" / "package_inquiry.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    client = ScriptedJudgeClient(JudgeConfig(model="openai/demo-judge"))
    client.reply("YES")
    scorer = resolver(client).instantiate(module.PackageInquiry, {})
    score = await scorer.run(Example(inputs="", outputs="", request="Where is my parcel?", response="Tuesday."))
    assert score.passed is True and client.requests[0].model == "openai/demo-judge"
