"""Code scorers for session rules (`subject: session`): they read a `Conversation`'s turns, never a model.

    session_errors      turns whose trace had spans in error, or closed incomplete
    session_length      the number of turns, against max_turns
    session_repetition  the agent giving the same reply in consecutive turns (a loop)

A closing look (`conversation.final`) gives value and passed. A look while the conversation goes on
finishes with a failure (value and passed False) as soon as the conversation has failed for good, and
otherwise continues: value None and passed None, so no threshold turns it into a verdict (what it has seen so
far is in `metadata["session"]`). None of them can pass early: a later turn can always still break them.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.contracts.conversation import Conversation
from pipeline.contracts.sessions import Turn
from pipeline.contracts.traces import TraceStatus
from scorers.base import Score, Scorer, ScoreTarget
from scorers.judges.session_tools import CONTINUE, FINISH, require_conversation, session_metadata


def _look(conversation: Conversation, *, value: int, failed: bool, reason: str, **seen: Any) -> Score:
    if conversation.final or failed:
        return Score(value=value, passed=not failed, reason=reason,
                     metadata={"session": session_metadata(conversation, FINISH, **seen)})
    return Score(value=None, passed=None, reason=f"no verdict yet after turn {len(conversation.turns)}: {reason}",
                 metadata={"session": session_metadata(conversation, CONTINUE, value=value, **seen)})


class SessionErrors(Scorer):
    """Fails a conversation with more than `max_failed_turns` turns in trouble: a span in error, or (unless
    `incomplete_fails` is false) a trace that closed incomplete. Value: the number of such turns."""

    name = "session_errors"
    subjects = frozenset({"session"})
    higher_is_better = False

    def __init__(self, max_failed_turns: int = 0, incomplete_fails: bool = True) -> None:
        if max_failed_turns < 0:
            raise ValueError("max_failed_turns must be >= 0")
        self.max_failed_turns = max_failed_turns
        self.incomplete_fails = incomplete_fails
        self.threshold = float(max_failed_turns)

    def _trouble(self, turn: Turn) -> str | None:
        parts = []
        if turn.errors:
            parts.append(f"{turn.errors} span{'s' if turn.errors != 1 else ''} in error")
        if self.incomplete_fails and turn.status != TraceStatus.COMPLETE:
            parts.append("incomplete")
        return ", ".join(parts) or None

    async def score(self, target: ScoreTarget) -> Score:
        conversation = require_conversation(target, self.name)
        troubled = [(n, why) for n, turn in enumerate(conversation.turns, start=1)
                    if (why := self._trouble(turn)) is not None]
        if troubled:
            listed = "; ".join(f"turn {n} ({why})" for n, why in troubled[:10])
            more = f"; … {len(troubled) - 10} more" if len(troubled) > 10 else ""
            reason = f"{len(troubled)} of {len(conversation.turns)} turn(s) in trouble: {listed}{more}"
        else:
            reason = f"no errors in {len(conversation.turns)} turn(s)"
        return _look(conversation, value=len(troubled), failed=len(troubled) > self.max_failed_turns, reason=reason,
                     failed_turns=[n for n, _ in troubled])


class SessionLength(Scorer):
    """Fails a conversation longer than `max_turns` turns. Value: the number of turns."""

    name = "session_length"
    subjects = frozenset({"session"})
    higher_is_better = False

    def __init__(self, max_turns: int) -> None:
        if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError("max_turns must be an integer >= 1")
        self.max_turns = max_turns
        self.threshold = float(max_turns)

    async def score(self, target: ScoreTarget) -> Score:
        conversation = require_conversation(target, self.name)
        count = len(conversation.turns)
        over = count > self.max_turns
        reason = f"{count} turn(s), " + (f"over the limit of {self.max_turns}" if over else f"limit {self.max_turns}")
        return _look(conversation, value=count, failed=over, reason=reason)


_SPACE = re.compile(r"\s+")


class SessionRepetition(Scorer):
    """Fails a conversation in which the agent gave the same reply in more than `max_repeats` consecutive turns
    (compared without case and with whitespace collapsed; an empty reply never counts). Value: the longest run
    of identical replies (1 when no reply repeats, 0 without replies)."""

    name = "session_repetition"
    subjects = frozenset({"session"})
    higher_is_better = False

    def __init__(self, max_repeats: int = 2) -> None:
        if max_repeats < 1:
            raise ValueError("max_repeats must be >= 1")
        self.max_repeats = max_repeats
        self.threshold = float(max_repeats)

    async def score(self, target: ScoreTarget) -> Score:
        conversation = require_conversation(target, self.name)
        longest, start = 0, 0  # the longest run and the turn it starts at
        run, run_start, previous = 0, 0, ""
        for n, turn in enumerate(conversation.turns, start=1):
            reply = _SPACE.sub(" ", turn.output).strip().casefold()
            if not reply:
                run, previous = 0, ""
                continue
            run, run_start = (run + 1, run_start) if reply == previous else (1, n)
            previous = reply
            if run > longest:
                longest, start = run, run_start
        if longest > 1:
            text = conversation.turns[start - 1].output
            reason = (f"the same reply in {longest} consecutive turns ({start}–{start + longest - 1}): "
                      f"{text[:200]!r}")
        else:
            reason = "no reply repeated in consecutive turns"
        return _look(conversation, value=longest, failed=longest > self.max_repeats, reason=reason,
                     **({"repeated_from_turn": start} if longest > 1 else {}))
