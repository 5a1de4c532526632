"""What every agent needs, built once by the composition root (`worker/app.py`) and handed to each role.

Besides the Settings and rules (`rules`: the version in use, swapped whole by `worker/rules_service.py`): the configuration objects built from them (assembly, sessions, scoring
retries), and the process's `ScorerResolver` (`scoring/resolvers.py`), which knows its uploaded scorers
and holds the one judge client every judge of the process shares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from pipeline import topics
from pipeline.assembly import AssemblyConfig
from pipeline.contracts import DeadLetter, encode
from pipeline.lag import LagTracker
from pipeline.metrics import Counters
from pipeline.rules import RuleSet
from pipeline.rules.versions import ActiveRules
from pipeline.scoring import RetryPolicy
from pipeline.sessions import SessionConfig
from pipeline.settings import Settings
from scorers.registry import ScorerResolver


@dataclass
class WorkerContext:
    app: faust.App
    settings: Settings
    rules: ActiveRules  # replaced whole by the rules service when a new version is applied (never mutated)
    counters: Counters
    topics: dict[str, faust.TopicT]
    assembly: AssemblyConfig
    sessions: SessionConfig
    retry_policy: RetryPolicy  # of a score job
    scorers: ScorerResolver  # judges built by it share its judge client; `uploaded`: the scorer store's catalog
    lag: LagTracker = field(default_factory=LagTracker)  # consumer lag: what each consumer here has read
    # The assembler's answer to "what do you hold of this trace?" (GET /traces/open/<id>); None without that role.
    open_trace: Callable[[str], dict[str, Any] | None] | None = None

    @property
    def ruleset(self) -> RuleSet:
        """The rules now. A handler that routes reads `rules` once per event, so the version it records is
        the one it routed with."""
        return self.rules.ruleset

    async def send(self, topic: str, key: str | bytes, value: bytes, partition: int | None = None) -> None:
        key_bytes = key.encode() if isinstance(key, str) else key
        await self.topics[topic].send(key=key_bytes, value=value, partition=partition)

    async def dead_letter(self, dl: DeadLetter) -> None:
        self.counters.inc("dead_letters", stage=dl.stage)
        await self.send(topics.DEAD_LETTERS, dl.source_topic, encode(dl))


def make_topics(app: faust.App, settings: Settings) -> dict[str, Any]:
    return {
        name: app.topic(name, partitions=settings.topic_partitions, key_serializer="raw", value_serializer="raw")
        for name in topics.ALL  # not topics.RULES: only plain aiokafka clients use it (rules/store.py)
    }
