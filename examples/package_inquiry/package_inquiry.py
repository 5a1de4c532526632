"""Package inquiry: did the support agent's response address the customer's package question?

An LLM judge answering YES or NO, written as an evalstream scorer module and uploaded with

    evalstream scorers upload examples/package_inquiry/package_inquiry.py examples/package_inquiry/requirements.txt \
        --network

(`--network`: it calls the model's API; without it, its sandbox has no network.)

The SDK asks for it with
    tracer.async_evaluate("package_inquiry", {"request": request, "response": response}, sampling_rate=0.95)

The model and endpoint come from EVALSTREAM_JUDGE_MODEL / EVALSTREAM_JUDGE_API_BASE (allow-list them
for the sandbox with EVALSTREAM_SANDBOX_ENV_ALLOW) or from the rule's params.
"""

from __future__ import annotations

import os

from pipeline.contracts import Example
from scorers.base import Score, Scorer, ScoreTarget
from scorers.judges.client import JudgeRequest, default_judge_client
from scorers.judges.records import JudgmentLog

PROMPT = """Evaluate if the customer service response adequately addresses a package inquiry.
Customer request: {request}
Agent response: {response}
Does the response address package-related concerns? Answer only "YES" or "NO"."""


class PackageInquiry(Scorer):
    name = "package_inquiry"
    version = "1"

    def __init__(self, model: str | None = None, api_base: str | None = None) -> None:
        self.model = model or os.environ.get("EVALSTREAM_JUDGE_MODEL", "openai/gpt-4o-mini")
        self.api_base = api_base or os.environ.get("EVALSTREAM_JUDGE_API_BASE") or None

    async def score(self, target: ScoreTarget) -> Score:
        if not isinstance(target, Example):
            raise TypeError("package_inquiry scores async_evaluate examples with 'request' and 'response'")
        request = getattr(target, "request", None) or target.inputs
        response = getattr(target, "response", None) or target.outputs
        log = JudgmentLog(model=self.model)
        answer = await default_judge_client().complete(JudgeRequest(
            model=self.model, api_base=self.api_base, api_key=os.environ.get("EVALSTREAM_JUDGE_API_KEY", "none"),
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
