"""Sessions: a conversation assembled from its closed traces, keyed by session id.

A *turn* is one closed trace version that carries a session id, summarised (its root's input and
output as text) with a reference back to the trace (`trace_id`, `trace_version`). The session
assembler gathers a session's turns and emits `Session` versions on the sessions topic: a closed
version when the session ends, and (when some rule judges each turn) an `open` snapshot after every
new turn. The session router turns them into `SessionJobBatch`es and `SessionDecision`s (in jobs.py,
beside trace decisions).
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.contracts.bounds import (
    ID_MAX_CHARS,
    SESSION_ID_MAX_CHARS,
    CostUsd,
    TimestampNs,
    UInt32,
    Version,
)
from pipeline.contracts.jobs import JobSource
from pipeline.contracts.spans import _Wire
from pipeline.contracts.traces import TraceStatus

SESSION_END_ATTRIBUTE = "evalstream.session.end"  # on any span of a turn: this turn ends the conversation


class SessionStatus(StrEnum):
    OPEN = "open"  # a snapshot while the conversation goes on (for rules that judge each turn)
    COMPLETE = "complete"  # every turn's trace closed complete
    INCOMPLETE = "incomplete"  # at least one turn's trace closed incomplete (its root never ended)


class SessionCloseReason(StrEnum):
    IDLE = "idle_timeout"  # no new turn for idle_timeout_s
    END = "end_marker"  # the latest turn carried `evalstream.session.end` (SDK: tracer.end_session())


class Turn(_Wire):
    """One turn of a conversation: a summary of one trace version, with its reference."""

    v: Literal[1] = 1
    session_id: str = Field(min_length=1, max_length=SESSION_ID_MAX_CHARS)
    trace_id: str = Field(min_length=1, max_length=ID_MAX_CHARS)
    trace_version: Version = 1
    project: str = "default"
    name: str | None = None  # the root span's name
    started_ns: TimestampNs = 0
    ended_ns: TimestampNs = 0
    status: TraceStatus = TraceStatus.COMPLETE
    agents: list[str] = Field(default_factory=list)  # distinct agent names, in span order
    input: str = ""  # the root's inputs as text (pipeline.contracts.transcript)
    output: str = ""  # the root's outputs as text
    errors: UInt32 = 0  # spans with status error
    cost_usd: CostUsd | None = None
    ends_session: bool = False


class RuleFinished(_Wire):
    """A rule that judges each turn reached its verdict on this session version: judge it no more
    until the session closes (the final verdict still comes then)."""

    rule: str
    session_version: Version
    turn: Version


class SessionTurns(_Wire):
    """Turns of one session (the message key is the session id), rules that finished judging it,
    or a tick (no session, no turns)."""

    v: Literal[1] = 1
    kind: Literal["session_turns"] = "session_turns"
    session_id: str = Field(default="", max_length=SESSION_ID_MAX_CHARS)
    turns: list[Turn] = Field(default_factory=list)
    finished: list[RuleFinished] = Field(default_factory=list)
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
    """A session version: every turn so far, in turn order (started_ns, then trace id). Closed, or
    an `open` snapshot (no close reason) taken after a new turn."""

    v: Literal[1] = 1
    session_id: str = Field(min_length=1, max_length=SESSION_ID_MAX_CHARS)
    version: Version
    project: str = "default"
    status: SessionStatus
    close_reason: SessionCloseReason | None = None
    started_ns: TimestampNs = 0
    ended_ns: TimestampNs = 0
    closed_at_ns: TimestampNs = 0  # for an open snapshot: when it was taken
    turns: list[Turn] = Field(default_factory=list)
    finished_rules: list[str] = Field(default_factory=list)  # open snapshots: rules done judging each turn

    @model_validator(mode="after")
    def _closed_has_reason(self) -> Session:
        if (self.status == SessionStatus.OPEN) != (self.close_reason is None):
            raise ValueError("an open snapshot has no close_reason; a closed session needs one")
        return self

    @property
    def is_open(self) -> bool:
        return self.status == SessionStatus.OPEN

    @property
    def duration_ms(self) -> float:
        return max(0, self.ended_ns - self.started_ns) / 1e6

    @property
    def trace_ids(self) -> list[str]:
        return [t.trace_id for t in self.turns]

    @property
    def has_error(self) -> bool:
        return any(t.errors for t in self.turns)

    @property
    def cost_usd(self) -> float:
        return sum(t.cost_usd or 0.0 for t in self.turns)


class SessionJob(_Wire):
    """Score one session version for one rule: after turn `turn` while it runs (`final` false), or
    its closing verdict (`final` true)."""

    job_id: str
    rule: str
    scorer: str
    params: dict[str, Any] = Field(default_factory=dict)
    threshold: float | None = None
    session_id: str
    session_version: Version
    turn: UInt32  # how many turns the scorer sees
    final: bool
    source: JobSource = JobSource.LIVE
    created_ns: TimestampNs = 0
    rules_version: str = Field(default="", max_length=64)  # the rules it was routed under ('' before versions)

    @staticmethod
    def make_id(rule: str, session_id: str, session_version: int, turn: int, final: bool) -> str:
        raw = f"session\x00{rule}\x00{session_id}\x00{session_version}\x00{'final' if final else turn}"
        return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


class SessionJobBatch(_Wire):
    """The jobs one session version (or open snapshot) produced; the session travels once."""

    v: Literal[1] = 1
    kind: Literal["session_jobs"] = "session_jobs"
    session: Session
    jobs: list[SessionJob]
