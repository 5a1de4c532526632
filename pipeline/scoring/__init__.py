from pipeline.scoring.runner import JobOutcome, RetryPolicy, ScorerCache, run_job

__all__ = ["JobOutcome", "RetryPolicy", "ScorerCache", "run_job"]
