"""A process's scorer resolver and judge client, built once from Settings by its composition root
(`worker/app.py` through the CLI's `up` / `worker`, and the commands that check rules) and handed down:
to the rules loader's check, the router's evaluation policy, the scorer cache and, through the resolver,
to every judge.

    worker_resolver(settings)          uploaded scorers from the scorer store, accepted before their first
                                       version arrives (a worker, and `backfill`'s check of the workers' rules)
    scorer_resolver(settings, uploads) built-ins, entry points, dotted paths, and `uploads` when given
"""

from __future__ import annotations

from pipeline.scoring.judges import judge_config
from pipeline.scoring.store import ScorerCatalog
from pipeline.scoring.uploaded import UploadedScorers
from pipeline.settings import Settings
from scorers.judges.client import JudgeClient
from scorers.registry import ScorerResolver


def scorer_resolver(settings: Settings, uploads: UploadedScorers | None = None) -> ScorerResolver:
    """A resolver whose judges share one client configured from `settings`."""
    return ScorerResolver(judge_client=JudgeClient(judge_config(settings)), uploaded=uploads)


def worker_resolver(settings: Settings) -> ScorerResolver:
    """A worker's: uploaded scorers resolve to their latest version on the scorer store (which the worker's
    scorer role follows into `resolver.uploaded.catalog`); a name without a version yet is accepted."""
    return scorer_resolver(settings, UploadedScorers(ScorerCatalog(), settings, accept_unknown=True))
