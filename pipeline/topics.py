"""Topic names: `evalstream.<entity>.v1`. The version changes only with an incompatible contract (traces and
jobs are `.v2` since they carry many traces per message).

Every topic has the same partition count, and a trace's messages go to the partition Kafka's default
partitioner picks for its id (`partition_for`) on every topic keyed by trace id."""

from __future__ import annotations

SPANS = "evalstream.spans.v1"  # SpanBatch, keyed by trace id; also carries assembler ticks
TRACES = "evalstream.traces.v2"  # TraceBatch: one partition's closed versions of a tick, keyed by the first
JOBS = "evalstream.jobs.v2"  # ScoreJobBundle: job batches of traces of one partition, keyed by the first
JOBS_DEFERRED = "evalstream.jobs-deferred.v1"  # ScoreJobBatch waiting for a rule's budget (not_before_ns)
SCORES = "evalstream.scores.v1"  # ScoreResultBatch, keyed by its first trace id
DECISIONS = "evalstream.decisions.v1"  # DecisionBatch, keyed by trace id
ALERT_OBSERVATIONS = "evalstream.alert-observations.v1"  # AlertObservationBatch by alert rule; also alerter ticks
ALERT_RETRIES = "evalstream.alert-retries.v1"  # AlertRetry: failed deliveries waiting to be sent again
ALERTS = "evalstream.alerts.v1"  # Alert, keyed by alert id
DEAD_LETTERS = "evalstream.deadletters.v1"  # DeadLetter, keyed by source topic
SCORERS = "evalstream.scorers.v1"  # UploadedScorer, keyed by scorer name; compacted: the latest per name
BACKFILL = "evalstream.backfill.v1"  # BackfillBatch: stored traces for named rules (`evalstream backfill`)
SESSION_TURNS = "evalstream.session-turns.v1"  # SessionTurns keyed by session id; also session-assembler ticks
SESSIONS = "evalstream.sessions.v1"  # Session keyed by session id: closed versions and open snapshots
SESSION_JOBS = "evalstream.session-jobs.v1"  # SessionJobBatch keyed by session id
METRICS = "evalstream.metrics.v1"  # WorkerMetrics: each worker's consumer-lag samples, keyed by worker
# RulesRecord keyed by its version; one partition, compacted: every version, the current one last. Not in ALL
# (those share one partition count); created with them (`admin.ensure_topics`).
RULES = "evalstream.rules.v1"
BUDGET_SPEND = "evalstream.budget-spend.v1"  # SpendRecord (reserve / settle) keyed by rule: the shared spend ledger

# Topics the ClickHouse sink reads, in the order it writes them.
SINK_TOPICS = (TRACES, SESSIONS, DECISIONS, SCORES, ALERTS, DEAD_LETTERS, SCORERS, METRICS)
ALL = (SPANS, TRACES, JOBS, JOBS_DEFERRED, SCORES, DECISIONS, ALERT_OBSERVATIONS, ALERT_RETRIES, ALERTS, DEAD_LETTERS, SCORERS,
       BACKFILL, SESSION_TURNS, SESSIONS, SESSION_JOBS, METRICS, BUDGET_SPEND)

# Topic configs beyond the defaults, applied when a topic is created.
# The spend ledger is read whole by every scorer at start: it keeps 3 hours (the hour's window, reservations
# that may still be live, and margin), whatever the pipeline's retention.
CONFIGS: dict[str, dict[str, str]] = {SCORERS: {"cleanup.policy": "compact"}, RULES: {"cleanup.policy": "compact"},
                                      BUDGET_SPEND: {"retention.ms": str(3 * 3600 * 1000)}}
# Topics with a fixed partition count of their own, whatever EVALSTREAM_TOPIC_PARTITIONS says.
FIXED_PARTITIONS: dict[str, int] = {RULES: 1}


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) picks for this key."""
    from aiokafka.partitioner import murmur2  # lazily: the SDK imports this module without aiokafka

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
