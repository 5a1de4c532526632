"""SandboxedScorer: an uploaded scorer as a plain `Scorer`, so the runner treats it like any other.

`run` asks its resolver for the name's current version (the worker: the latest on the scorer
topic; `evalstream scorers test`: the file being tested) and sends the job to that version's
sandbox. `version`, `threshold` and `higher_is_better` are those of the version that ran last:
during the moment a new version takes over, a result may be labelled with the version next to it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import orjson

from pipeline.contracts.uploads import UploadedScorer
from pipeline.scoring.sandbox.pool import SandboxPool
from scorers.base import Score, Scorer, ScoreTarget
from scorers.judges.records import note_activity, note_dropped


class UploadResolver(Protocol):
    @property
    def pool(self) -> SandboxPool: ...

    async def current(self, name: str) -> UploadedScorer:
        """The version to run now; raises ScorerNotFoundError when there is none."""


class SandboxedScorer(Scorer):
    resolver: ClassVar[UploadResolver]
    # Which subjects an upload scores is known only in its sandbox (the version may not have arrived when the
    # rules load): span rules may name it, and the sandbox refuses a span job for an upload that does not
    # declare "span" (ScorerSubjectError, an error row naming what it declares).
    subjects: ClassVar[frozenset[str]] = frozenset({"trace", "span"})

    def __init__(self, **params: Any) -> None:
        try:
            orjson.dumps(params)
        except TypeError as exc:
            raise TypeError(f"params of uploaded scorer {self.name!r} must be JSON values: {exc}") from None
        self.params = params
        self._version: str | None = None
        self._threshold: float | None = None
        self._higher_is_better = True

    @property  # type: ignore[override]
    def version(self) -> str:
        return self._version or "?"

    @property  # type: ignore[override]
    def threshold(self) -> float | None:
        return self._threshold

    @property  # type: ignore[override]
    def higher_is_better(self) -> bool:
        return self._higher_is_better

    async def run(self, target: ScoreTarget) -> Score:
        upload = await self.resolver.current(self.name)
        self._version = upload.version
        reply = await self.resolver.pool.score(upload, self.params, target)
        self._threshold, self._higher_is_better = reply.threshold, reply.higher_is_better
        for entry in reply.activity:  # the judges' calls in the sandbox, for the job's evaluation trace
            note_activity(entry)
        note_dropped(reply.activity_dropped)
        return reply.score


def sandboxed_scorer_class(name: str, resolver: UploadResolver) -> type[SandboxedScorer]:
    return type(f"Uploaded_{name}", (SandboxedScorer,), {"name": name, "resolver": resolver, "__module__": __name__})
