from pipeline.scoring.runner import JobOutcome, RetryPolicy, ScorerCache, run_job, run_session_job

__all__ = ["JobOutcome", "RetryPolicy", "ScorerCache", "run_job", "run_session_job"]
