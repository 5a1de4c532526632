"""Checks on what an agent produced: the final output of a trace (its root span), a span's outputs (a span
rule's SpanSubject) or an example's outputs."""

from __future__ import annotations

import re
from typing import Any

import orjson

from pipeline.contracts import Example, SpanSubject, Trace
from scorers.base import Score, Scorer, ScoreTarget

TRACE_AND_SPAN = frozenset({"trace", "span"})


def output_of(target: ScoreTarget) -> Any:
    if isinstance(target, Example | SpanSubject):
        return target.outputs
    if not isinstance(target, Trace):
        raise TypeError(f"scores a Trace, a SpanSubject or an Example, not {type(target).__name__}")
    roots = [s for s in target.spans if s.is_root]
    return roots[0].outputs if roots else None


def text_of(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class JsonOutput(Scorer):
    """Passes when the output is valid JSON (a JSON string, or already structured) and, when `schema`
    is given, matches that JSON Schema. Value: True / False."""

    name = "json_output"
    subjects = TRACE_AND_SPAN

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        self.schema = schema
        if schema is not None:
            from jsonschema import Draft202012Validator

            Draft202012Validator.check_schema(schema)  # a broken schema fails when the rules load
            self._validator = Draft202012Validator(schema)

    async def score(self, target: ScoreTarget) -> Score:
        output = output_of(target)
        if output is None:
            return Score(value=False, passed=False, reason="no output to check")
        if isinstance(output, str):
            try:
                output = orjson.loads(output)
            except orjson.JSONDecodeError as exc:
                return Score(value=False, passed=False, reason=f"output is not valid JSON: {exc}")
        if self.schema is None:
            return Score(value=True, passed=True, reason="output is valid JSON")
        errors = sorted(self._validator.iter_errors(output), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.path) or "(root)"
            return Score(value=False, passed=False,
                         reason=f"{len(errors)} schema violation(s); first at {where}: {first.message}"[:500])
        return Score(value=True, passed=True, reason="output matches the schema")


PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "phone": r"(?<!\d)(?:\+?\d{1,3}[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}(?!\d)",
    "credit_card": r"(?<!\d)(?:\d[ -]?){13,19}(?!\d)",
    "us_ssn": r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)",
    "openai_key": r"sk-[A-Za-z0-9_-]{20,}",
    "aws_access_key": r"AKIA[0-9A-Z]{16}",
    "private_key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "bearer_token": r"(?i)bearer\s+[A-Za-z0-9._~+/-]{20,}=*",
}


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


class PiiLeak(Scorer):
    """Fails when the output contains PII or secrets. `detect` picks from the built-in patterns
    (email, phone, credit_card, us_ssn, openai_key, aws_access_key, private_key, bearer_token);
    `patterns` adds your own {name: regex}. `scope: all_spans` scans every span's output instead
    of the final one (a span rule's subject: its own output). Value: the number of findings. Matches are
    reported masked."""

    name = "pii_leak"
    subjects = TRACE_AND_SPAN
    higher_is_better = False
    threshold = 0.0

    def __init__(self, detect: list[str] | None = None, patterns: dict[str, str] | None = None,
                 scope: str = "output") -> None:
        unknown = set(detect or []) - set(PATTERNS)
        if unknown:
            raise ValueError(f"unknown detectors {sorted(unknown)}; known: {sorted(PATTERNS)}")
        if scope not in ("output", "all_spans"):
            raise ValueError("scope must be 'output' or 'all_spans'")
        chosen = {name: PATTERNS[name] for name in (detect or PATTERNS)}
        chosen.update(patterns or {})
        self.patterns = {name: re.compile(regex) for name, regex in chosen.items()}
        self.scope = scope

    async def score(self, target: ScoreTarget) -> Score:
        if self.scope == "all_spans" and isinstance(target, Trace):
            texts = [text_of(s.outputs) for s in target.spans if s.outputs is not None]
        else:
            output = output_of(target)
            texts = [] if output is None else [text_of(output)]
        findings: list[tuple[str, str]] = []
        for text in texts:
            for name, pattern in self.patterns.items():
                for match in pattern.finditer(text):
                    found = match.group(0)
                    if name == "credit_card" and not _luhn(re.sub(r"\D", "", found)):
                        continue
                    findings.append((name, found[:3] + "…" + found[-2:] if len(found) > 6 else "…"))
        if not findings:
            return Score(value=0, reason="no PII or secrets found")
        kinds = sorted({name for name, _ in findings})
        return Score(value=len(findings), reason=f"{len(findings)} finding(s): {', '.join(kinds)}",
                     metadata={"findings": [{"kind": k, "masked": m} for k, m in findings[:20]]})
