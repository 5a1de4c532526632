"""The shapes a judge's answer can take: per-criterion verdicts, a 1-10 score, or a label.

Each format gives the strict tool the judge must call (`tool()`), the words that tell the model how to
answer (`instructions()`), and turns the tool's arguments into a `Score` (`to_score()`), raising
JudgeOutputError with the raw answer when they do not fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson

from pipeline.contracts import CriterionVerdict, Verdict
from scorers.base import Score
from scorers.judges.errors import JudgeConfigError, JudgeOutputError
from scorers.judges.records import ToolCallRequest

VERDICT_VALUES = [v.value for v in Verdict]


class VerdictFormat(Protocol):
    tool_name: str

    def tool(self) -> dict[str, Any]: ...

    def instructions(self) -> str: ...

    def to_score(self, arguments: dict[str, Any], raw: str) -> Score: ...


def _strict_tool(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description, "strict": True,
        "parameters": {"type": "object", "properties": properties, "required": list(properties),
                       "additionalProperties": False},
    }}


def forced_choice(tool_name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": tool_name}}


class InconclusivePolicy(StrEnum):
    """What a criteria judgment with inconclusive verdicts (and no false one) resolves to."""

    UNKNOWN = "unknown"  # passed is None: neither a pass nor a failure (no alert on `failed`)
    FAIL = "fail"
    PASS = "pass"


@dataclass(frozen=True)
class CriteriaVerdicts:
    criteria: tuple[str, ...]
    inconclusive: InconclusivePolicy = InconclusivePolicy.UNKNOWN
    tool_name: str = "submit_verdicts"

    def __post_init__(self) -> None:
        if not self.criteria or not all(isinstance(c, str) and c.strip() for c in self.criteria):
            raise JudgeConfigError("criteria must be a non-empty list of non-empty strings")

    @property
    def keys(self) -> list[str]:
        return [f"c{i}" for i in range(1, len(self.criteria) + 1)]

    def tool(self) -> dict[str, Any]:
        verdict = {
            "type": "object",
            # the reason comes first so the model argues before it decides
            "properties": {"reason": {"type": "string", "description": "One or two sentences of evidence."},
                           "verdict": {"type": "string", "enum": VERDICT_VALUES}},
            "required": ["reason", "verdict"], "additionalProperties": False,
        }
        per_criterion = {key: {**verdict, "description": text} for key, text in zip(self.keys, self.criteria)}
        return _strict_tool(self.tool_name, "Submit one verdict for every criterion.", {
            "criteria": {"type": "object", "properties": per_criterion, "required": self.keys,
                         "additionalProperties": False},
            "summary": {"type": "string", "description": "The overall judgment in one or two sentences."},
        })

    def instructions(self) -> str:
        listed = "\n".join(f"{key}. {text}" for key, text in zip(self.keys, self.criteria))
        return (
            "Judge each criterion on its own:\n" + listed + "\n\n"
            "For each one answer `true` when the evidence shows it is met, `false` when the evidence shows it "
            "is not, and `inconclusive` when what you were given cannot tell. A criterion phrased as a "
            "prohibition (\"does not ...\") is `true` when the prohibited thing did not happen. Judge only "
            "these criteria."
        )

    def to_score(self, arguments: dict[str, Any], raw: str) -> Score:
        given = arguments.get("criteria")
        if not isinstance(given, dict):
            raise JudgeOutputError("no `criteria` object", raw)
        verdicts: list[CriterionVerdict] = []
        for key, text in zip(self.keys, self.criteria):
            item = given.get(key)
            if isinstance(item, str):  # a bare verdict without a reason is still a verdict
                item = {"verdict": item}
            if not isinstance(item, dict) or str(item.get("verdict", "")).lower() not in VERDICT_VALUES:
                raise JudgeOutputError(f"criterion {key} ({text!r}) has no verdict among {VERDICT_VALUES}", raw)
            verdicts.append(CriterionVerdict(criterion=text, verdict=Verdict(str(item["verdict"]).lower()),
                                             reason=str(item.get("reason") or "")))
        true = sum(v.verdict is Verdict.TRUE for v in verdicts)
        false = [v for v in verdicts if v.verdict is Verdict.FALSE]
        unsure = [v for v in verdicts if v.verdict is Verdict.INCONCLUSIVE]
        passed: bool | None
        if false:
            passed = False
        elif not unsure:
            passed = True
        else:
            passed = {InconclusivePolicy.UNKNOWN: None, InconclusivePolicy.FAIL: False,
                      InconclusivePolicy.PASS: True}[self.inconclusive]
        counts = f"{true}/{len(verdicts)} criteria met" + (f", {len(unsure)} inconclusive" if unsure else "")
        detail = "; ".join(f"not met: {v.criterion}" for v in false) or "; ".join(
            f"inconclusive: {v.criterion}" for v in unsure)
        summary = str(arguments.get("summary") or "").strip()
        reason = " — ".join(part for part in (counts + (f" ({detail})" if detail else ""), summary) if part)
        return Score(value=true / len(verdicts), passed=passed, reason=reason[:2000], criteria=verdicts)


@dataclass(frozen=True)
class ScaleScore:
    """A whole number from `low` to `high`; the judge's threshold decides pass / fail."""

    question: str
    low: int = 1
    high: int = 10
    tool_name: str = "submit_score"

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise JudgeConfigError("a scale judge needs a question (what to rate)")
        if not self.low < self.high:
            raise JudgeConfigError("the scale needs low < high")

    def tool(self) -> dict[str, Any]:
        return _strict_tool(self.tool_name, f"Submit a score from {self.low} to {self.high}.", {
            "reason": {"type": "string", "description": "The evidence for the score, briefly."},
            "score": {"type": "integer", "enum": list(range(self.low, self.high + 1))},
        })

    def instructions(self) -> str:
        return (f"Rate on a scale from {self.low} (worst) to {self.high} (best): {self.question}\n"
                f"Use the whole scale: {self.high} only when nothing could be better, {self.low} when it fails "
                "completely.")

    def to_score(self, arguments: dict[str, Any], raw: str) -> Score:
        value = arguments.get("score")
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise JudgeOutputError(f"`score` must be a whole number from {self.low} to {self.high}", raw)
        return Score(value=value, reason=str(arguments.get("reason") or "")[:2000])


@dataclass(frozen=True)
class LabelChoice:
    """One label out of `labels`; `passing` (a subset) says which labels pass, none given: no pass / fail."""

    question: str
    labels: tuple[str, ...]
    passing: tuple[str, ...] = ()
    tool_name: str = "submit_label"

    def __post_init__(self) -> None:
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise JudgeConfigError("labels must be at least two distinct strings")
        unknown = set(self.passing) - set(self.labels)
        if unknown:
            raise JudgeConfigError(f"passing labels {sorted(unknown)} are not among the labels {list(self.labels)}")

    def tool(self) -> dict[str, Any]:
        return _strict_tool(self.tool_name, "Submit the one label that fits best.", {
            "reason": {"type": "string", "description": "The evidence for the label, briefly."},
            "label": {"type": "string", "enum": list(self.labels)},
        })

    def instructions(self) -> str:
        return f"{self.question}\nChoose exactly one label: {', '.join(self.labels)}."

    def to_score(self, arguments: dict[str, Any], raw: str) -> Score:
        label = arguments.get("label")
        if label not in self.labels:
            matches = [known for known in self.labels if isinstance(label, str) and known.lower() == label.lower()]
            if not matches:
                raise JudgeOutputError(f"`label` must be one of {list(self.labels)}", raw)
            label = matches[0]
        passed = (label in self.passing) if self.passing else None
        return Score(value=label, passed=passed, reason=str(arguments.get("reason") or "")[:2000])


# -- reading the answer -----------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def verdict_arguments(fmt: VerdictFormat, text: str | None, tool_calls: list[ToolCallRequest]) -> tuple[
        dict[str, Any], str]:
    """The verdict tool's arguments, else a JSON object in the text (the fallback); and the raw answer."""
    for call in tool_calls:
        if call.name == fmt.tool_name:
            return _json_object(call.arguments, call.arguments), call.arguments
    raw = text or ""
    if tool_calls:
        names = ", ".join(c.name for c in tool_calls)
        raw = raw or orjson.dumps([{"name": c.name, "arguments": c.arguments} for c in tool_calls]).decode()
        if not text:
            raise JudgeOutputError(f"called {names} instead of {fmt.tool_name}", raw)
    if not raw.strip():
        raise JudgeOutputError(f"empty answer: neither a {fmt.tool_name} call nor JSON text", raw)
    fenced = _FENCE.search(raw)
    candidate = fenced.group(1) if fenced else raw
    start, end = candidate.find("{"), candidate.rfind("}")
    if start < 0 or end <= start:
        raise JudgeOutputError(f"no {fmt.tool_name} call and no JSON object in the text", raw)
    return _json_object(candidate[start:end + 1], raw), raw


def _json_object(text: str, raw: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise JudgeOutputError(f"invalid JSON ({exc})", raw) from None
    if not isinstance(value, dict):
        raise JudgeOutputError("the JSON is not an object", raw)
    return value


class AnswerVia(StrEnum):
    TOOL = "tool"  # a strict tool call forced by tool_choice (a JSON object in the text is still accepted)
    JSON = "json"  # for models without tool calling: a JSON object in the reply


def answer_instructions(fmt: VerdictFormat, via: AnswerVia) -> str:
    if via is AnswerVia.TOOL:
        return f"Give your answer by calling `{fmt.tool_name}`."
    schema = fmt.tool()["function"]["parameters"]
    return ("Reply with only a JSON object (no prose, no code fence) that matches this JSON schema:\n"
            + orjson.dumps(schema).decode())
