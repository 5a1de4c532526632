"""UploadedScorer: one version of an uploaded scorer, on `evalstream.scorers.v1` keyed by its name."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import Field

from pipeline.contracts.bounds import TimestampNs
from pipeline.contracts.spans import _Wire


class UploadedScorer(_Wire):
    """The module's source and its requirements. `version` is a hash of what runs (source, entry,
    requirements, network), so uploading the same content twice gives the same version.
    `network`: the scorer needs the network (an API); without it, its sandbox has none."""

    v: Literal[1] = 1
    name: str
    version: str
    entry: str  # the Scorer subclass or @scorer function in the module
    kind: Literal["class", "function"]
    filename: str  # as uploaded, e.g. "my_scorer.py": tracebacks name it
    source: str
    requirements: list[str] = Field(default_factory=list)  # normalized PEP 508, sorted
    uploaded_at_ns: TimestampNs = 0
    uploaded_by: str = ""
    network: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @staticmethod
    def content_version(source: str, entry: str, requirements: list[str], network: bool = False) -> str:
        # Without network the hash is what it was before the field existed: stored versions keep theirs.
        raw = "\x00".join([source, entry, *requirements, *(["\x00network"] if network else [])])
        return hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()
