"""Versioned wire contracts. Every message carries `v` (the contract version).

Messages are JSON (orjson). Readers ignore unknown fields, so a newer producer can add
optional fields without breaking older workers; a change that breaks that rule gets a new
topic version (`.v2`).
"""

from pipeline.contracts.alerts import (
    Alert,
    AlertKind,
    AlertLevel,
    AlertObservation,
    AlertObservationBatch,
    AlertRetry,
    AlertThread,
    AlertTrace,
    DeliveryAttempt,
    DeliveryStatus,
)
from pipeline.contracts.backfill import BackfillBatch
from pipeline.contracts.codec import decode, encode, load_object, pack_items, validate, validate_each
from pipeline.contracts.deadletters import DeadLetter
from pipeline.contracts.jobs import (
    CriterionVerdict,
    Decision,
    DecisionBatch,
    DecisionOutcome,
    Example,
    JobSource,
    ScoreJob,
    ScoreJobBatch,
    ScoreJobBundle,
    ScoreResult,
    ScoreResultBatch,
    ScoreStatus,
    SessionDecision,
    Verdict,
)
from pipeline.contracts.metrics import ConsumerLag, WorkerMetrics
from pipeline.contracts.sessions import (
    RuleFinished,
    Session,
    SessionCloseReason,
    SessionJob,
    SessionJobBatch,
    SessionStatus,
    SessionTurns,
    Turn,
)
from pipeline.contracts.spans import (
    CONTRACT_VERSION,
    ErrorInfo,
    EvaluationRequest,
    Span,
    SpanBatch,
    SpanBundle,
    SpanStatus,
    SpanType,
)
from pipeline.contracts.traces import CloseReason, Trace, TraceBatch, TraceStatus

__all__ = [
    "CONTRACT_VERSION",
    "Alert",
    "AlertKind",
    "AlertLevel",
    "AlertObservation",
    "AlertObservationBatch",
    "AlertRetry",
    "AlertThread",
    "AlertTrace",
    "BackfillBatch",
    "CloseReason",
    "ConsumerLag",
    "CriterionVerdict",
    "DeadLetter",
    "Decision",
    "DecisionBatch",
    "DecisionOutcome",
    "DeliveryAttempt",
    "DeliveryStatus",
    "ErrorInfo",
    "EvaluationRequest",
    "Example",
    "JobSource",
    "RuleFinished",
    "ScoreJob",
    "ScoreJobBatch",
    "ScoreJobBundle",
    "ScoreResult",
    "ScoreResultBatch",
    "ScoreStatus",
    "Session",
    "SessionCloseReason",
    "SessionDecision",
    "SessionJob",
    "SessionJobBatch",
    "SessionStatus",
    "SessionTurns",
    "Span",
    "SpanBatch",
    "SpanBundle",
    "SpanStatus",
    "SpanType",
    "Trace",
    "TraceBatch",
    "TraceStatus",
    "Turn",
    "Verdict",
    "WorkerMetrics",
    "decode",
    "encode",
    "load_object",
    "pack_items",
    "validate",
    "validate_each",
]
