"""What session scorers share, and the tools a session agent judge reads a conversation with.

Shared by every session scorer (judges and code scorers): `require_conversation`, which refuses any target
but a `Conversation` with an error that names the rule subject, and `session_metadata`, the
`metadata["session"]` record of a look: `{"decision": "continue" | "finish", "turn": n, "final": bool}`.

The tools (`SessionToolbox`, schemas in `SESSION_TOOL_SCHEMAS`):

    list_turns   turn summaries: number, trace id, status, errors, the start of the input and output
    get_turn     one turn in full: input and output text, agents, errors, cost
    open_trace   a turn's trace as a skeleton (trace_view.render_skeleton), loaded with conversation.trace(n)
    get_span     one span of a turn's trace in full (trace_tools.get_spans)
    search       a regex over the turns' inputs and outputs, or over one turn's trace (trace_tools.search_trace)

Every result is bounded, and a bad call (or a trace that cannot be loaded) gives `{"error": ...}` for the
model to act on. A loaded trace is kept for the rest of the judgment.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson

from pipeline.contracts.conversation import Conversation
from pipeline.contracts.sessions import Turn
from pipeline.contracts.transcript import cap
from scorers.base import ScoreTarget
from scorers.judges import trace_tools
from scorers.judges.records import TraceToolCall, note_activity
from scorers.judges.span_tree import SpanTree
from scorers.judges.trace_view import SKELETON_TOKENS, render_skeleton

log = logging.getLogger(__name__)

CONTINUE, FINISH = "continue", "finish"
RESULT_CHARS = 12_000
SUMMARY_CHARS = 200
LIST_LIMIT = 50
LIST_MAX = 100
SEARCH_CONTEXT = 80
SEARCH_MATCHES = 20


def require_conversation(target: ScoreTarget, scorer_name: str) -> Conversation:
    """The target as a Conversation; a TypeError for a Trace or Example (a trace rule naming a session scorer)."""
    if not isinstance(target, Conversation):
        raise TypeError(f"{scorer_name} scores conversations: use it in a rule with `subject: session`; "
                        f"it was given a {type(target).__name__}")
    return target


def session_metadata(conversation: Conversation, decision: str, **extra: Any) -> dict[str, Any]:
    return {"decision": decision, "turn": len(conversation.turns), "final": conversation.final, **extra}


# -- the tools --------------------------------------------------------------------------------------

_TURN = {"type": "integer", "minimum": 1, "description": "A turn number, counted from 1 as in the transcript."}

SESSION_TOOL_SCHEMAS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "list_turns",
        "description": "Summaries of the conversation's turns: number, trace id, status, error spans, and the "
                       "start of the user's input and the agent's output.",
        "parameters": {"type": "object", "properties": {
            "offset": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": LIST_MAX},
        }, "additionalProperties": False},
    }},
    {"type": "function", "function": {
        "name": "get_turn",
        "description": "One turn in full: the user's input and the agent's output, agents, status, errors, cost.",
        "parameters": {"type": "object", "properties": {"turn": _TURN}, "required": ["turn"],
                       "additionalProperties": False},
    }},
    {"type": "function", "function": {
        "name": "open_trace",
        "description": "The span tree of a turn's trace (ids in brackets, names, types, durations, ERROR marks; "
                       "no payloads). Read spans with get_span.",
        "parameters": {"type": "object", "properties": {"turn": _TURN}, "required": ["turn"],
                       "additionalProperties": False},
    }},
    {"type": "function", "function": {
        "name": "get_span",
        "description": "One span of a turn's trace in full: inputs, outputs, attributes, error, model, tokens, "
                       "children. Long payloads are cut.",
        "parameters": {"type": "object", "properties": {
            "turn": _TURN,
            "span_id": {"type": "string", "description": "A span id as shown in brackets (a unique prefix is "
                                                         "enough)."},
        }, "required": ["turn", "span_id"], "additionalProperties": False},
    }},
    {"type": "function", "function": {
        "name": "search",
        "description": "Regular-expression search (case-insensitive) over every turn's input and output; with "
                       "`turn`, over that turn's trace instead (span names, inputs, outputs, attributes, errors).",
        "parameters": {"type": "object", "properties": {
            "pattern": {"type": "string", "description": "A Python regular expression."},
            "turn": {**_TURN, "description": "Search this turn's trace instead of the conversation."},
            "max_matches": {"type": "integer", "minimum": 1, "maximum": 100},
        }, "required": ["pattern"], "additionalProperties": False},
    }},
]

SESSION_TOOL_NAMES = frozenset(t["function"]["name"] for t in SESSION_TOOL_SCHEMAS)
_ARGS = {"list_turns": {"offset", "limit"}, "get_turn": {"turn"}, "open_trace": {"turn"},
         "get_span": {"turn", "span_id"}, "search": {"pattern", "turn", "max_matches"}}


class SessionToolbox:
    """Runs the judge model's tool calls against one conversation (and its turns' traces), and remembers them."""

    def __init__(self, conversation: Conversation, *, payload_chars: int = trace_tools.PAYLOAD_CHARS,
                 skeleton_tokens: int = SKELETON_TOKENS, result_chars: int = RESULT_CHARS) -> None:
        self.conversation = conversation
        self.payload_chars = payload_chars
        self.skeleton_tokens = skeleton_tokens
        self.result_chars = result_chars
        self.calls: list[TraceToolCall] = []
        self._trees: dict[int, SpanTree | str] = {}  # turn -> its loaded trace, or why it could not be loaded

    async def run(self, name: str, arguments: str, step: int) -> str:
        """The tool's result as JSON text (an `error` object when the call is bad); logged at debug level."""
        started, began = time.perf_counter(), time.time()
        args: dict[str, Any] = {}
        try:
            parsed = orjson.loads(arguments or "{}")
            if not isinstance(parsed, dict):
                raise TypeError("arguments must be a JSON object")
            args = parsed
            result = await self._dispatch(name, args)
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            result = {"error": f"bad arguments for {name}: {exc}"}
        error = str(result["error"]) if "error" in result else None
        text = orjson.dumps(result).decode()
        if len(text) > self.result_chars:
            text = text[:self.result_chars] + f"… [result cut at {self.result_chars} chars: page or narrow the query]"
        ms = (time.perf_counter() - started) * 1000
        call = TraceToolCall(step, name, args, len(text), round(ms, 3), error, result=text, started_at=began)
        self.calls.append(call)
        note_activity(call)
        log.debug("session judge on session %s step %d: %s(%s) -> %d chars in %.1f ms%s",
                  self.conversation.session_id, step, name, arguments, len(text), ms,
                  f" error: {error}" if error else "")
        return text

    async def _dispatch(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name not in _ARGS:
            return {"error": f"unknown tool {name!r}; the tools are {sorted(SESSION_TOOL_NAMES)}"}
        unknown = set(args) - _ARGS[name]
        if unknown:
            raise TypeError(f"unknown argument(s) {sorted(unknown)}")
        if name == "list_turns":
            return self.list_turns(_int(args, "offset", 0, low=0), _int(args, "limit", LIST_LIMIT, low=1))
        if name == "search" and args.get("turn") is None:
            return self.search_transcript(_pattern(args), _int(args, "max_matches", SEARCH_MATCHES, low=1))
        n = _int(args, "turn", None, low=1)
        if not 1 <= n <= len(self.conversation.turns):
            return {"error": f"turn {n} does not exist: the conversation has {len(self.conversation.turns)} turn(s)"}
        if name == "get_turn":
            return self.get_turn(n)
        tree = await self._tree(n)
        if isinstance(tree, str):
            return {"error": tree, "turn": n}
        if name == "open_trace":
            return {"turn": n, "trace_id": tree.trace.trace_id, "skeleton": render_skeleton(tree.trace,
                                                                                             self.skeleton_tokens)}
        if name == "get_span":
            span_id = args.get("span_id")
            if not isinstance(span_id, str) or not span_id.strip():
                raise TypeError("span_id (a string) is required")
            found = trace_tools.get_spans(tree, [span_id], max_chars=self.payload_chars)
            if not found["spans"]:
                return {"error": f"no span with id {span_id!r} in turn {n}'s trace; open_trace({n}) shows the ids"}
            return {"turn": n, "span": found["spans"][0]}
        matches = _int(args, "max_matches", SEARCH_MATCHES, low=1)
        return {"turn": n, **trace_tools.search_trace(tree, _pattern(args), max_matches=min(100, matches))}

    async def _tree(self, n: int) -> SpanTree | str:
        if n not in self._trees:
            try:
                self._trees[n] = SpanTree(await self.conversation.trace(n))
            except LookupError as exc:
                self._trees[n] = f"the trace of turn {n} cannot be opened: {exc}"
        return self._trees[n]

    # -- over the turns themselves ------------------------------------------------------------------
    def list_turns(self, offset: int = 0, limit: int = LIST_LIMIT) -> dict[str, Any]:
        turns = self.conversation.turns
        limit = min(LIST_MAX, limit)
        page = list(enumerate(turns, start=1))[offset:offset + limit]
        following = offset + len(page)
        return {
            "total": len(turns),
            "offset": offset,
            "next_offset": following if following < len(turns) else None,
            "turns": [{"turn": n, "trace_id": t.trace_id, "trace_version": t.trace_version, "status": str(t.status),
                       "errors": t.errors, "input": cap(t.input, SUMMARY_CHARS), "output": cap(t.output, SUMMARY_CHARS),
                       **({"ends_session": True} if t.ends_session else {})} for n, t in page],
        }

    def get_turn(self, n: int) -> dict[str, Any]:
        t: Turn = self.conversation.turn(n)
        return {
            "turn": n, "trace_id": t.trace_id, "trace_version": t.trace_version, "name": t.name,
            "status": str(t.status), "agents": t.agents, "errors": t.errors, "cost_usd": t.cost_usd,
            "duration_ms": round(max(0, t.ended_ns - t.started_ns) / 1e6, 3), "ends_session": t.ends_session,
            "input": cap(t.input, self.payload_chars), "output": cap(t.output, self.payload_chars),
        }

    def search_transcript(self, pattern: str, max_matches: int = SEARCH_MATCHES) -> dict[str, Any]:
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            return {"error": f"invalid regular expression {pattern!r}: {exc}"}
        max_matches = min(100, max_matches)
        matches: list[dict[str, Any]] = []
        for n, turn in enumerate(self.conversation.turns, start=1):
            for side, text in (("user", turn.input), ("agent", turn.output)):
                for m in regex.finditer(text):
                    if len(matches) >= max_matches:
                        return {"pattern": pattern, "matches": matches, "truncated": True}
                    before = text[max(0, m.start() - SEARCH_CONTEXT):m.start()]
                    after = text[m.end():m.end() + SEARCH_CONTEXT]
                    matches.append({"turn": n, "side": side, "match": m.group(0)[:200],
                                    "context": f"{before}[[{m.group(0)[:200]}]]{after}"})
        return {"pattern": pattern, "matches": matches, "truncated": False}


def _int(args: dict[str, Any], key: str, default: int | None, *, low: int) -> int:
    value = args.get(key, default)
    if value is None:
        raise TypeError(f"{key} (an integer) is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, not {value!r}")
    if value < low:
        raise ValueError(f"{key} must be >= {low}")
    return value


def _pattern(args: dict[str, Any]) -> str:
    pattern = args.get("pattern")
    if not isinstance(pattern, str):
        raise TypeError("pattern (a string) is required")
    return pattern
