"""Score jobs, score results and routing decisions."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field

from pipeline.contracts.bounds import (
    ID_MAX_CHARS,
    NAME_MAX_CHARS,
    Finite,
    NonNegativeFinite,
    TimestampNs,
    UInt16,
    UInt32,
    Version,
)
from pipeline.contracts.spans import _Wire
from pipeline.contracts.traces import Trace


class JobSource(StrEnum):
    LIVE = "live"
    BACKFILL = "backfill"


class JobSubject(StrEnum):
    """What a job's scorer is given: the trace, or one span of it (a span rule; the trace comes as context).
    An `async_evaluate` job carries an `example`, which the scorer gets whatever the subject says."""

    TRACE = "trace"
    SPAN = "span"


class Example(_Wire):
    """The payload of an `async_evaluate` call. Fields beyond these are kept (a user's own example
    class, e.g. `request`/`response`), so their scorers can read them."""

    model_config = ConfigDict(extra="allow")

    inputs: Any = None
    outputs: Any = None
    expected: Any = None
    context: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ScoreJob(_Wire):
    job_id: str
    rule: str
    scorer: str
    params: dict[str, Any] = Field(default_factory=dict)
    threshold: float | None = None
    trace_id: str
    trace_version: Version
    span_id: str | None = None  # set for async_evaluate jobs: the span that asked
    request_index: int = Field(default=0, ge=0, le=65535)  # which of that span's async_evaluate calls
    example: Example | None = None  # None: the scorer gets the trace, or the span for subject span
    source: JobSource = JobSource.LIVE
    created_ns: TimestampNs = 0
    subject: JobSubject = JobSubject.TRACE  # span: a span rule's job, about span_id (older readers ignore it)
    rules_version: str = Field(default="", max_length=64)  # the rules it was routed under ('' before versions)

    @staticmethod
    def make_id(rule: str, trace_id: str, trace_version: int, span_id: str | None = None,
                source: JobSource = JobSource.LIVE, request_index: int = 0) -> str:
        # Deterministic, so a redelivered job writes the same rows instead of new ones. A backfill's job
        # has its own id: its score becomes current and the live score stays in `scores` for audit. Two
        # requests on one span are two jobs; the first keeps the id it had before requests were counted.
        raw = f"{rule}\x00{trace_id}\x00{trace_version}\x00{span_id or ''}"
        if request_index:
            raw += f"\x00#{request_index}"
        if source != JobSource.LIVE:
            raw += f"\x00{source.value}"
        return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


class ScoreJobBatch(_Wire):
    """The jobs one trace version produced; the trace travels once, not once per job."""

    v: Literal[1] = 1
    trace: Trace
    jobs: list[ScoreJob]
    not_before_ns: int = 0  # deferred jobs: do not run before this time
    deferrals: int = 0  # how many times these jobs were deferred so far


class ScoreJobBundle(_Wire):
    """The job batches of several traces of one partition, in one message (`evalstream.jobs.v2`): a scorer
    handles them as one event and answers with one result batch."""

    v: Literal[1] = 1
    batches: list[ScoreJobBatch]


class Verdict(StrEnum):
    TRUE = "true"
    FALSE = "false"
    INCONCLUSIVE = "inconclusive"


class CriterionVerdict(_Wire):
    criterion: str
    verdict: Verdict
    reason: str = ""


class ScoreStatus(StrEnum):
    SCORED = "scored"
    ERROR = "error"


class ScoreResult(_Wire):
    job_id: str
    rule: str
    scorer: str
    scorer_version: str = "1"
    trace_id: str
    trace_version: Version
    span_id: str | None = None
    # The scored trace's root span, set by the runner (None for a trace without a root, and for session
    # results): what a trace-level result is about, for exporters that link a verdict to a span.
    root_span_id: str | None = Field(default=None, max_length=ID_MAX_CHARS)
    request_index: int = Field(default=0, ge=0, le=65535)  # of an async_evaluate job: which call on the span
    span_name: str | None = Field(default=None, max_length=NAME_MAX_CHARS)  # the name of span_id's span
    project: str = "default"
    agent_name: str | None = None
    model: str | None = None
    status: ScoreStatus
    value: float | bool | str | None = None
    passed: bool | None = None
    threshold: Finite | None = None
    reason: str = ""
    criteria: list[CriterionVerdict] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    error_type: str | None = None
    error_message: str | None = None
    attempts: UInt16 = 1
    latency_ms: NonNegativeFinite = 0.0
    source: JobSource = JobSource.LIVE
    scored_at_ns: TimestampNs = 0
    # Set when a session rule scored a conversation; trace_id is then its latest judged turn's trace.
    session_id: str | None = None
    session_version: Version | None = None
    turn: UInt32 | None = None  # how many turns the scorer saw
    final: bool | None = None  # the closing verdict (true) or a verdict while it runs (false)
    # The judge's own work on this job, stored as a trace of project `evalstream-judges` (evaluation_traces.py).
    evaluation_trace_id: str | None = None
    rules_version: str = Field(default="", max_length=64)  # its job's: the rules it was routed under

    @property
    def is_session(self) -> bool:
        return self.session_id is not None


class ScoreResultBatch(_Wire):
    v: Literal[1] = 1
    results: list[ScoreResult]


class DecisionOutcome(StrEnum):
    FILTERED_OUT = "filtered_out"
    SAMPLED_OUT = "sampled_out"
    QUEUED = "queued"
    DEFERRED = "deferred"  # the rule's budget is spent; the job runs when it refills
    SCORED = "scored"
    FAILED = "failed"


class Decision(_Wire):
    rule: str
    trace_id: str
    trace_version: Version
    # An async_evaluate request is decided per call: the span that asked, and which of its calls it was.
    span_id: str | None = None
    request_index: int = Field(default=0, ge=0, le=65535)
    outcome: DecisionOutcome
    reason: str = ""
    job_id: str | None = None
    project: str = "default"
    source: JobSource = JobSource.LIVE
    decided_at_ns: TimestampNs = 0
    rules_version: str = Field(default="", max_length=64)  # the rules it was made under ('' before versions)


class SessionDecision(_Wire):
    """What happened to (rule, session version): filtered out, sampled out, queued, scored or failed.
    Written for closing verdicts; judging each turn leaves its record in the session's scores."""

    rule: str
    session_id: str
    session_version: int = Field(ge=1)
    outcome: DecisionOutcome
    reason: str = ""
    job_id: str | None = None
    project: str = "default"
    turns: UInt32 = 0
    source: JobSource = JobSource.LIVE
    decided_at_ns: TimestampNs = 0
    rules_version: str = Field(default="", max_length=64)  # the rules it was made under ('' before versions)


class DecisionBatch(_Wire):
    """Decisions for (rule, trace) and for (rule, session)."""

    v: Literal[1] = 1
    decisions: list[Decision] = Field(default_factory=list)
    sessions: list[SessionDecision] = Field(default_factory=list)


def result_decision(result: ScoreResult) -> Decision | SessionDecision | None:
    """The decision a score result implies: `scored`, or `failed` with the error as its reason.

    The scorers do not send these (issue 19): the sink derives them from `evalstream.scores.v1`, so a result
    and its decision are one message. A trace rule's result -> a Decision on (rule, trace version, span,
    request); a session rule's closing verdict (`final`) -> a SessionDecision; a verdict while the session
    runs -> None, as only closing verdicts are decided. `decided_at_ns` is when the result was produced
    (`scored_at_ns`, set by the runner), so a redelivered result gives the same row, not a newer one.
    """
    scored = result.status == ScoreStatus.SCORED
    outcome = DecisionOutcome.SCORED if scored else DecisionOutcome.FAILED
    reason = result.reason if scored else f"{result.error_type}: {result.error_message}"[:500]
    if result.is_session:
        if not result.final:
            return None
        return SessionDecision(
            rule=result.rule, session_id=result.session_id or "", session_version=result.session_version or 1,
            outcome=outcome, reason=reason, job_id=result.job_id, project=result.project, turns=result.turn or 0,
            source=result.source, decided_at_ns=result.scored_at_ns, rules_version=result.rules_version,
        )
    return Decision(
        rule=result.rule, trace_id=result.trace_id, trace_version=result.trace_version, span_id=result.span_id,
        request_index=result.request_index, outcome=outcome, reason=reason, job_id=result.job_id,
        project=result.project, source=result.source, decided_at_ns=result.scored_at_ns,
        rules_version=result.rules_version,
    )
