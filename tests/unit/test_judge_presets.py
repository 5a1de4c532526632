"""The preset judges (helpfulness, groundedness, task_completion) through litellm's real client."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipeline.contracts import Example
from scorers.judges import JUDGES, PRESETS
from scorers.judges.client import JudgeClient
from scorers.judges.presets import Groundedness, Helpfulness, TaskCompletion
from scorers.testing import judge_client
from tests.support.judge_traces import agent_trace
from tests.support.openai_server import OpenAIServer

MODEL = "openai/gpt-4o-mini"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = Example(inputs="How long do refunds take?", outputs="Refunds take 5 business days.")


@pytest.fixture
def client() -> JudgeClient:
    return judge_client()  # this test's own: a real litellm client that gives up quickly


@pytest.fixture
def endpoint(openai_server: OpenAIServer, client: JudgeClient) -> dict[str, Any]:
    """A judge's params against the local server, and its client (as a worker's resolver hands it one)."""
    return {"model": MODEL, "api_base": openai_server.base_url, "api_key": "test", "client": client}


def verdicts(**by_key: str) -> dict[str, str]:
    args = {"criteria": {k: {"reason": f"because {k}", "verdict": v} for k, v in by_key.items()},
            "summary": "overall"}
    return {"name": "submit_verdicts", "arguments": json.dumps(args)}


def request_body(server: OpenAIServer, index: int = -1) -> dict[str, Any]:
    return server.requests[index].body


# -- presets ----------------------------------------------------------------------------------------

def test_presets_are_named_scorers() -> None:
    assert sorted(PRESETS) == ["groundedness", "helpfulness", "task_completion"]
    assert {"llm_criteria", "llm_scale", "llm_label", "agent_judge"} < set(JUDGES)
    assert all(name == cls.name for name, cls in JUDGES.items())


async def test_helpfulness_is_a_scale_with_its_guidelines(openai_server: OpenAIServer,
                                                          endpoint: dict[str, Any]) -> None:
    judge = Helpfulness(guidelines=["Answers must be in English."], **endpoint)
    openai_server.reply_with(tool_calls=[{"name": "submit_score", "arguments": '{"reason": "ok", "score": 9}'}])
    score = await judge.run(EXAMPLE)
    assert judge.decide(score, None) == (True, 7.0)
    system = request_body(openai_server)["messages"][0]["content"]
    assert "helpful" in system and "- Answers must be in English." in system
    with pytest.raises(TypeError):
        Helpfulness(question="other", **endpoint)  # type: ignore[call-arg]


async def test_groundedness_checks_against_context_and_skips_without_it(
        openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    judge = Groundedness(**endpoint)
    skipped = await judge.run(Example(inputs="q", outputs="a"))
    assert skipped.passed is None and "no retrieved context" in skipped.reason and openai_server.requests == []
    assert skipped.metadata["judge"]["steps"] == 0
    openai_server.reply_with(tool_calls=[verdicts(c1="true", c2="true", c3="false")])
    score = await judge.run(agent_trace(12))
    assert score.passed is False and len(score.criteria) == 3
    user = request_body(openai_server)["messages"][1]["content"]
    assert "<retrieved_context>" in user and "Orders may be refunded within 30 days" in user


async def test_task_completion_on_an_example_has_no_trace_to_explore(
        openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    judge = TaskCompletion(**endpoint)
    openai_server.reply_with(tool_calls=[{"name": "submit_label",
                                          "arguments": '{"reason": "done", "label": "completed"}'}])
    score = await judge.run(Example(inputs="Cancel order 17", outputs="Order 17 is cancelled."))
    assert (score.value, score.passed) == ("completed", True)
    assert score.metadata["trace_view"]["mode"] == "example"
    (request,) = openai_server.requests
    user = request.body["messages"][1]["content"]
    assert "The request: Cancel order 17" in user and "no trace" in user


def test_the_judges_import_without_litellm_or_openai() -> None:
    """The lead registers PRESETS as built-ins, so `scorers.builtin` will import them: no LLM library may load."""
    script = textwrap.dedent("""
        import json, sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("litellm", "openai"):
                    raise ImportError("blocked: " + name)
                return None

        sys.meta_path.insert(0, Blocker())
        import scorers.judges
        from scorers.judges import JUDGES, PRESETS
        from scorers.judges.presets import Helpfulness
        Helpfulness(model="openai/gpt-4o-mini")
        print(json.dumps(sorted(PRESETS)))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["groundedness", "helpfulness", "task_completion"]
