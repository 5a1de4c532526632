"""The judge's calls under a score in `evalstream traces show`, read from the score's evaluation trace, and the
one-line previews of LLM and tool spans that both that and the evaluation trace's own tree show.

Bounded: at most `CALLS_SHOWN` calls per score, and each preview is cut from at most `READ_CHARS` of a span's
stored inputs or outputs (texts can be long: a judge's prompts are stored whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.storage.filters import OneOf, where
from pipeline.storage.reader import Reader

CALLS_SHOWN = 30
READ_CHARS = 2000
PREVIEW_CHARS = 100


@dataclass
class JudgeCallLine:
    """An LLM call or tool run of a judge, as one line under its score."""

    name: str
    span_type: str
    model: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    duration_ms: float
    status: str
    preview: str


def usage_text(model: str, input_tokens: int | None, output_tokens: int | None, cost_usd: float | None) -> str:
    """"openai/gpt-4o-mini · 812→31 tok · $0.000141" (whatever of it is known)."""
    parts = [model] if model else []
    if input_tokens is not None or output_tokens is not None:
        parts.append(f"{input_tokens or 0}→{output_tokens or 0} tok")
    if cost_usd is not None:
        parts.append(f"${cost_usd:.6f}")
    return " · ".join(parts)


def preview(span_type: str, inputs: str, outputs: str, chars: int = PREVIEW_CHARS) -> str:
    """What a span said, in a line: an LLM span's answer (text, or the tools it called), a tool span's
    arguments and what it returned, else its output."""
    out = _lenient(outputs)
    if span_type == "llm":
        if isinstance(out, dict) and (out.get("text") or out.get("tool_calls")):
            calls = [f"{c.get('name', '?')}({c.get('arguments', '')})" for c in out.get("tool_calls") or []
                     if isinstance(c, dict)]
            said = " ".join(p for p in [str(out.get("text") or "").strip(), *(f"→ {c}" for c in calls)] if p)
            return _line(said, chars)
        return _line(_text(out), chars)
    if span_type == "evaluator":  # the root of an evaluation trace: what it judged, and the verdict
        subject, verdict = _lenient(inputs), out
        if isinstance(subject, dict) and isinstance(verdict, dict):
            mark = {True: "pass", False: "fail"}.get(verdict.get("passed"), verdict.get("status") or "no verdict")
            value = "" if verdict.get("value") in (None, "") else f" {verdict['value']}"
            reason = f": {verdict['reason']}" if verdict.get("reason") else ""
            return _line(f"judged trace {subject.get('trace_id')} v{subject.get('trace_version')} "
                         f"({subject.get('rule')}): {mark}{value}{reason}", chars * 2)
    if span_type == "tool":
        args = _text(_lenient(inputs))
        return _line(f"({_line(args, chars // 3)}) → {_text(out)}", chars)
    return _line(_text(out), chars)


def load_judge_calls(reader: Reader, trace_ids: list[str]) -> dict[str, list[JudgeCallLine]]:
    """The LLM and tool spans of these evaluation traces, in start order, at most CALLS_SHOWN each."""
    ids = sorted({t for t in trace_ids if t})
    if not ids:
        return {}
    db = reader.database
    rows = reader.query(
        f"SELECT trace_id, name, span_type, model, input_tokens, output_tokens, cost_usd, duration_ms, status, "
        f"substring(inputs, 1, {READ_CHARS}), substring(outputs, 1, {READ_CHARS}) FROM {db}.spans FINAL "
        f"{where(OneOf('trace_id', ids), OneOf('span_type', ['llm', 'tool']))}"
        f"ORDER BY trace_id, start_time, span_id LIMIT {CALLS_SHOWN} BY trace_id").rows
    out: dict[str, list[JudgeCallLine]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(JudgeCallLine(
            name=r[1], span_type=r[2], model=r[3] or "", input_tokens=r[4], output_tokens=r[5], cost_usd=r[6],
            duration_ms=float(r[7] or 0), status=r[8], preview=preview(r[2], r[9] or "", r[10] or "")))
    return out


def _lenient(text: str) -> Any:
    try:
        return orjson.loads(text) if text else None
    except orjson.JSONDecodeError:  # cut at READ_CHARS, or not JSON: shown as it is
        return text


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def _line(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars - 1] + "…"
