from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.admin import ensure_topics
from pipeline.embedded import EmbeddedBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A fresh Tansu broker per test on a free port (topics are fixed names, so tests must not share one)."""
    embedded = EmbeddedBroker(log_file=tmp_path / "broker.log")
    bootstrap = embedded.start()
    asyncio.run(ensure_topics(bootstrap, partitions=4))
    try:
        yield bootstrap
    finally:
        embedded.stop()
