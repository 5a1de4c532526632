"""From a closed trace to a turn, and from turns to a readable transcript.

A turn's input and output are its root span's `inputs` and `outputs` (any JSON value) as text:
a string stays as is; a dict with a user-like key ("message", "input", …) or an agent-like key
("output", "answer", …) gives that value; a chat `messages` list gives its last user message (the
last assistant message on the output side); an OpenAI-style response gives its first choice;
anything else becomes compact JSON. Each side is capped with an ellipsis.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from pipeline.contracts.sessions import SESSION_END_ATTRIBUTE, Session, Turn
from pipeline.contracts.spans import Span
from pipeline.contracts.traces import Trace, TraceStatus

ELLIPSIS = "…"
MAX_TEXT_CHARS = 2_000
MAX_TRANSCRIPT_CHARS = 20_000

Side = Literal["input", "output"]
_KEYS: dict[Side, tuple[str, ...]] = {
    "input": ("message", "input", "question", "query", "content", "prompt"),
    "output": ("output", "answer", "reply", "response", "content"),
}
_ROLE: dict[Side, str] = {"input": "user", "output": "assistant"}


def turn_from_trace(trace: Trace, max_text_chars: int = MAX_TEXT_CHARS) -> Turn | None:
    """The turn this trace is, or None when no span carries a session id."""
    root = trace.root
    first = min(trace.spans, key=lambda s: (s.start_ns, s.span_id), default=None)
    session_id = (root.session_id if root else None) or next(
        (s.session_id for s in sorted(trace.spans, key=lambda s: (s.start_ns, s.span_id)) if s.session_id), None)
    if not session_id:
        return None
    head = root or first
    assert head is not None  # a session id implies a span
    agents: list[str] = []
    for span in sorted(trace.spans, key=lambda s: (s.start_ns, s.span_id)):
        if span.agent_name and span.agent_name not in agents:
            agents.append(span.agent_name)
    costs = [s.cost_usd for s in trace.spans if s.cost_usd is not None]
    return Turn(
        session_id=session_id,
        trace_id=trace.trace_id,
        trace_version=trace.version,
        project=trace.project,
        name=trace.name,
        started_ns=trace.start_ns,
        ended_ns=trace.end_ns,
        status=trace.status,
        agents=agents,
        input=render_value(head.inputs, "input", max_text_chars),
        output=render_value(head.outputs, "output", max_text_chars),
        errors=sum(1 for s in trace.spans if s.status == "error"),
        cost_usd=sum(costs) if costs else None,
        ends_session=any(ends_session(s) for s in trace.spans),
    )


def ends_session(span: Span) -> bool:
    flag = span.attributes.get(SESSION_END_ATTRIBUTE)
    if isinstance(flag, str):
        return flag.strip().lower() in ("true", "1", "yes")
    return flag is True or flag == 1


def render_value(value: Any, side: Side, max_chars: int = MAX_TEXT_CHARS) -> str:
    return cap(_text(value, side, 0).strip(), max_chars)


def cap(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - len(ELLIPSIS))] + ELLIPSIS


def _text(value: Any, side: Side, depth: int) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if depth < 4:
        if isinstance(value, dict):
            picked = _pick(value, side)
            if picked is not _NOTHING:
                return _text(picked, side, depth + 1)
        elif isinstance(value, list) and _is_chat(value):
            return _text(_last_message(value, side), side, depth + 1)
    return _json(value)


_NOTHING = object()


def _pick(value: dict[str, Any], side: Side) -> Any:
    """The part of a dict a reader of the conversation wants, or _NOTHING."""
    if isinstance(value.get("messages"), list) and _is_chat(value["messages"]):
        return _last_message(value["messages"], side)
    if "role" in value and "content" in value:  # one chat message
        return _parts(value["content"])
    choices = value.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):  # an OpenAI-style response
        choice = choices[0]
        message = choice.get("message")
        if isinstance(message, dict) and "content" in message:
            return _parts(message["content"])
        if "text" in choice:
            return choice["text"]
    for key in _KEYS[side]:
        if value.get(key) not in (None, ""):
            return _parts(value[key])
    if len(value) == 1:
        (only,) = value.values()
        if isinstance(only, str):
            return only
    return _NOTHING


def _is_chat(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(m, dict) and "role" in m for m in items)


def _last_message(messages: list[dict[str, Any]], side: Side) -> Any:
    role = _ROLE[side]
    for message in reversed(messages):
        if message.get("role") == role:
            return _parts(message.get("content"))
    return _parts(messages[-1].get("content"))


def _parts(content: Any) -> Any:
    """Chat content given as parts ([{"type": "text", "text": …}, …]) joined into one text."""
    if isinstance(content, list) and content and all(isinstance(p, dict) and "type" in p for p in content):
        texts = [p.get("text") for p in content if p.get("type") in ("text", "input_text", "output_text")]
        if texts and all(isinstance(t, str) for t in texts):
            return "\n".join(texts)
    return content


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)


# -- transcript ---------------------------------------------------------------------------------------

def render_transcript(session: Session | list[Turn], max_chars: int = MAX_TRANSCRIPT_CHARS) -> str:
    """Turns in order as "Turn N (trace <id>):\\nUser: …\\nAgent: …". When too long, the first turn
    and the most recent ones are kept and a line says how many turns between them were left out."""
    turns = session.turns if isinstance(session, Session) else sorted(session, key=lambda t: (t.started_ns,
                                                                                               t.trace_id))
    blocks = [_block(i, t) for i, t in enumerate(turns, start=1)]
    if not blocks:
        return ""
    text = "\n\n".join(blocks)
    if len(text) <= max_chars or len(blocks) == 1:
        return cap(text, max_chars)
    first, rest = blocks[0], blocks[1:]
    kept: list[str] = [rest[-1]]  # the latest turn always stays
    for block in reversed(rest[:-1]):
        elided = len(rest) - len(kept) - 1
        candidate = [block, *kept]
        if len(_join(first, candidate, elided)) > max_chars:
            break
        kept = candidate
    out = _join(first, kept, len(rest) - len(kept))
    if len(out) <= max_chars:
        return out
    # the first and the latest turn alone are too long: give each half the room
    note = _elision(len(rest) - 1)
    room = max(0, (max_chars - len(note) - 4) // 2) if note else max(0, (max_chars - 2) // 2)
    parts = [cap(first, room)] + ([note] if note else []) + [cap(rest[-1], room)]
    return cap("\n\n".join(parts), max_chars)


def _block(n: int, turn: Turn) -> str:
    marks = [f"trace {turn.trace_id}"]
    if turn.status != TraceStatus.COMPLETE:
        marks.append("incomplete")
    if turn.errors:
        marks.append(f"{turn.errors} error{'s' if turn.errors != 1 else ''}")
    if turn.ends_session:
        marks.append("ended the session")
    output = turn.output or ("(no output: the turn did not finish)" if turn.status != TraceStatus.COMPLETE
                             else "(no output)")
    return f"Turn {n} ({', '.join(marks)}):\nUser: {turn.input}\nAgent: {output}"


def _elision(count: int) -> str:
    return f"[… {count} turn{'s' if count != 1 else ''} elided …]" if count else ""


def _join(first: str, kept: list[str], elided: int) -> str:
    note = _elision(elided)
    return "\n\n".join([first, *([note] if note else []), *kept])
