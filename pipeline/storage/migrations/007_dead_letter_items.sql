-- A message can carry many traces (TraceBatch, ScoreJobBundle, the SDK's SpanBundle), and each that
-- fails is dead-lettered alone. `item` names it (its trace id, or its index when it had none we could
-- read), so two failures in one message are two rows rather than one replacing the other.

-- The sorting key may only grow by a column added in the same statement.
ALTER TABLE {db}.dead_letters ADD COLUMN IF NOT EXISTS item String AFTER job_id, MODIFY ORDER BY (stage, source_topic, partition, offset, job_id, item);
