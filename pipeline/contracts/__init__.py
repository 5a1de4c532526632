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
from pipeline.contracts.codec import decode, encode
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
    ScoreResult,
    ScoreResultBatch,
    ScoreStatus,
    Verdict,
)
from pipeline.contracts.metrics import ConsumerLag, WorkerMetrics
from pipeline.contracts.spans import (
    CONTRACT_VERSION,
    ErrorInfo,
    EvaluationRequest,
    Span,
    SpanBatch,
    SpanStatus,
    SpanType,
)
from pipeline.contracts.traces import CloseReason, Trace, TraceStatus

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
    "ScoreJob",
    "ScoreJobBatch",
    "ScoreResult",
    "ScoreResultBatch",
    "ScoreStatus",
    "Span",
    "SpanBatch",
    "SpanStatus",
    "SpanType",
    "Trace",
    "TraceStatus",
    "Verdict",
    "WorkerMetrics",
    "decode",
    "encode",
]
