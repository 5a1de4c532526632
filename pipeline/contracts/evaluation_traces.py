"""Evaluation traces: what a judge did for one score job (its model calls and tool runs), sent by the scorer
as an ordinary trace of its own project, and linked from the score (`ScoreResult.evaluation_trace_id`).

Rules do not judge these traces unless their filter names `JUDGE_PROJECT` (`routing/judge_traces.py`).
"""

from __future__ import annotations

import hashlib

JUDGE_PROJECT = "evalstream-judges"
SERVICE = "evalstream-scorer"


def evaluation_trace_id(job_id: str) -> str:
    """The evaluation trace of a job: 32 hex characters derived from the job id, so a job that runs again
    (redelivered, retried, deferred) sends the same trace instead of a second one."""
    return hashlib.blake2b(f"evaluation\x00{job_id}".encode(), digest_size=16).hexdigest()
