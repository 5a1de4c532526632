"""Turn, SessionTurns and Session: a conversation assembled from its closed traces, keyed by session id.

A *turn* is one closed trace version that carries a session id, summarised (its root's input and
output as text) with a reference back to the trace (`trace_id`, `trace_version`). The session
assembler gathers a session's turns and emits a closed `Session` version, like the trace assembler
emits `Trace` versions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from pipeline.contracts.spans import _Wire
from pipeline.contracts.traces import TraceStatus

SESSION_END_ATTRIBUTE = "evalstream.session.end"  # on a trace's root span: this turn ends the conversation


class SessionStatus(StrEnum):
    COMPLETE = "complete"  # every turn's trace closed complete
    INCOMPLETE = "incomplete"  # at least one turn's trace closed incomplete (its root never ended)


class SessionCloseReason(StrEnum):
    IDLE = "idle_timeout"  # no new turn for idle_timeout_s
    END = "end_marker"  # the latest turn's root carried `evalstream.session.end`


class Turn(_Wire):
    """One turn of a conversation: a summary of one trace version, with its reference."""

    v: Literal[1] = 1
    session_id: str = Field(min_length=1, max_length=256)
    trace_id: str = Field(min_length=1, max_length=128)
    trace_version: int = Field(default=1, ge=1)
    project: str = "default"
    name: str | None = None  # the root span's name
    started_ns: int = Field(default=0, ge=0)
    ended_ns: int = Field(default=0, ge=0)
    status: TraceStatus = TraceStatus.COMPLETE
    agents: list[str] = Field(default_factory=list)  # distinct agent names, in span order
    input: str = ""  # the root's inputs as text (pipeline.sessions.transcript)
    output: str = ""  # the root's outputs as text
    errors: int = Field(default=0, ge=0)  # spans with status error
    cost_usd: float | None = None
    ends_session: bool = False


class SessionTurns(_Wire):
    """Turns of one session (the message key is the session id), or a tick (no session, no turns)."""

    v: Literal[1] = 1
    kind: Literal["session_turns"] = "session_turns"
    session_id: str = Field(default="", max_length=256)
    turns: list[Turn] = Field(default_factory=list)
    tick: bool = False

    @model_validator(mode="after")
    def _one_session(self) -> SessionTurns:
        if self.tick:
            return self
        if not self.session_id:
            raise ValueError("session_id is required unless tick is set")
        strays = sorted({t.session_id for t in self.turns if t.session_id != self.session_id})
        if strays:
            raise ValueError(f"turns of other sessions in a batch for {self.session_id!r}: {strays}")
        return self


class Session(_Wire):
    """A closed session version: every turn so far, in turn order (started_ns, then trace id)."""

    v: Literal[1] = 1
    session_id: str = Field(min_length=1, max_length=256)
    version: int = Field(ge=1)
    project: str = "default"
    status: SessionStatus
    close_reason: SessionCloseReason
    started_ns: int = 0
    ended_ns: int = 0
    closed_at_ns: int = 0
    turns: list[Turn] = Field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return max(0, self.ended_ns - self.started_ns) / 1e6

    @property
    def trace_ids(self) -> list[str]:
        return [t.trace_id for t in self.turns]
