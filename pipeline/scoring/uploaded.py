"""Uploaded scorers in a process: the catalog of current versions and the sandboxes that run them.

An `UploadedScorers` is the uploaded source of the process's `ScorerResolver` (`scoring/resolvers.py`,
built by the composition root before it loads the rules). A worker's accepts a rule naming a scorer
that has no uploaded version yet: its jobs become error rows saying so until a version arrives, then
it is scored without a restart.
"""

from __future__ import annotations

import asyncio
import logging

from pipeline import topics
from pipeline.contracts.uploads import UploadedScorer
from pipeline.errors import ScorerNotFoundError
from pipeline.scoring.sandbox.errors import SandboxSetupError
from pipeline.scoring.sandbox.limits import SandboxLimits
from pipeline.scoring.sandbox.pool import SandboxPool
from pipeline.scoring.sandbox.scorer import SandboxedScorer, sandboxed_scorer_class
from pipeline.scoring.store import ScorerCatalog
from pipeline.scoring.uploads import NAME
from pipeline.settings import Settings

log = logging.getLogger(__name__)


class UploadedScorers:
    """A `ScorerResolver`'s source of uploaded scorers, and what resolves their `SandboxedScorer`s.

    `accept_unknown`: a name with no version yet still resolves (workers), or does not (`rules check`).
    """

    def __init__(self, catalog: ScorerCatalog, settings: Settings, *, accept_unknown: bool,
                 ready_timeout_s: float = 15.0) -> None:
        self.catalog = catalog
        self.settings = settings
        self.accept_unknown = accept_unknown
        self.ready_timeout_s = ready_timeout_s
        self._classes: dict[str, type[SandboxedScorer]] = {}
        self._pool: SandboxPool | None = None

    @property
    def pool(self) -> SandboxPool:
        if self._pool is None:
            self._pool = SandboxPool(self.settings.data_dir / "sandbox", SandboxLimits.from_settings(self.settings))
        return self._pool

    def scorer_class(self, name: str) -> type[SandboxedScorer] | None:
        if not NAME.match(name) or (not self.accept_unknown and name not in self.catalog):
            return None
        cls = self._classes.get(name)
        if cls is None:
            cls = self._classes[name] = sandboxed_scorer_class(name, self)
        return cls

    async def current(self, name: str) -> UploadedScorer:
        if not self.catalog.ready.is_set():
            try:  # a worker that just started may still be replaying the scorer topic
                await asyncio.wait_for(self.catalog.ready.wait(), self.ready_timeout_s)
            except TimeoutError:
                log.warning("scorer store: not read within %g s; resolving %s with what has arrived",
                            self.ready_timeout_s, name)
        upload = self.catalog.get(name)
        if upload is None:
            raise ScorerNotFoundError(
                f"unknown scorer {name!r}: it is not a built-in, an installed entry point or a dotted path, and no "
                f"uploaded version has arrived on {topics.SCORERS}; upload it with "
                f"`evalstream scorers upload FILE [REQUIREMENTS] --name {name}`")
        return upload

    async def check_isolation(self) -> None:
        """At start-up: create the sandbox user if needed, ask the kernel what it allows, and log every
        part of the isolation that is not enforced, before any upload runs."""
        try:
            await self.pool.isolation()
        except SandboxSetupError as exc:  # EVALSTREAM_SANDBOX_REQUIRE_ISOLATION: uploaded scorers will not run
            log.error("sandbox: %s", exc)

    def on_change(self, upload: UploadedScorer) -> None:
        """A version became current (the store follower calls this): get its sandbox ready now."""
        self.pool.prepare(upload)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


class FixedUpload:
    """Resolves one record, whatever the name: `evalstream scorers test` runs a file this way,
    through the same sandbox path as a worker."""

    def __init__(self, upload: UploadedScorer, pool: SandboxPool) -> None:
        self.upload = upload
        self.pool = pool

    async def current(self, name: str) -> UploadedScorer:
        return self.upload


def catalog_of(records: list[UploadedScorer]) -> ScorerCatalog:
    catalog = ScorerCatalog()
    for record in records:
        catalog.put(record)
    catalog.ready.set()
    return catalog
