"""Package inquiry: did the support agent's response address the customer's package question?

An LLM judge answering YES or NO, written as an evalstream scorer module and uploaded with

    evalstream scorers upload examples/package_inquiry/package_inquiry.py examples/package_inquiry/requirements.txt \
        --network

(`--network`: it calls the model's API; without it, its sandbox has no network.)

The SDK asks for it with
    tracer.async_evaluate("package_inquiry", {"request": request, "response": response}, sampling_rate=0.95)

It calls the model through the judge client it is given (`takes_judge_client`), as the built-in judges
do: in its sandbox, a client configured from EVALSTREAM_JUDGE_MODEL / _API_BASE / _API_KEY (allow-list
them for the sandbox with EVALSTREAM_SANDBOX_ENV_ALLOW); the rule's params beat them. Its tests give it
a `scorers.testing.ScriptedJudgeClient`.
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.contracts import Example
from scorers.base import Score, Scorer, ScoreTarget
from scorers.judges.client import JudgeClient, JudgeRequest
from scorers.judges.records import JudgmentLog

PROMPT = """Evaluate if the customer service response adequately addresses a package inquiry.
Customer request: {request}
Agent response: {response}
Does the response address package-related concerns? Answer only "YES" or "NO"."""


class PackageInquiry(Scorer):
    name = "package_inquiry"
    version = "1"

    takes_judge_client: ClassVar[bool] = True

    def __init__(self, model: str | None = None, api_base: str | None = None,
                 client: JudgeClient | None = None) -> None:
        self.client = client if client is not None else JudgeClient()
        self.model = model or self.client.config.model
        self.api_base = api_base or self.client.config.api_base

    async def score(self, target: ScoreTarget) -> Score:
        if not isinstance(target, Example):
            raise TypeError("package_inquiry scores async_evaluate examples with 'request' and 'response'")
        request = getattr(target, "request", None) or target.inputs
        response = getattr(target, "response", None) or target.outputs
        log = JudgmentLog(model=self.model)
        answer = await self.client.complete(JudgeRequest(
            model=self.model, api_base=self.api_base, api_key=self.client.config.api_key or "none",
            messages=[{"role": "user", "content": PROMPT.format(request=request, response=response)}],
            params={"temperature": 0},
        ))
        log.calls.append(answer.call)
        verdict = (answer.text or "").strip().upper()
        if verdict not in ("YES", "NO"):
            raise ValueError(f"the judge answered {answer.text!r}; expected YES or NO")
        hit = verdict == "YES"
        return Score(value=1.0 if hit else 0.0, passed=hit,
                     reason="the response addresses the package inquiry" if hit
                     else "the response does not address the package inquiry",
                     metadata={"judge": log.metadata()})
