"""`evalstream topics init | list` against the real broker: creates what is missing, reports differences."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import topics
from pipeline.embedded import EmbeddedBroker

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env={**os.environ, "COLUMNS": "200", **env},
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def empty_broker(tmp_path: Path) -> Iterator[str]:
    """A broker with no topics yet (the shared `broker` fixture creates them)."""
    embedded = EmbeddedBroker(log_file=tmp_path / "broker.log")
    try:
        yield embedded.start()
    finally:
        embedded.stop()


def test_topics_init_creates_every_topic_once_and_reports_a_partition_mismatch(empty_broker: str,
                                                                              tmp_path: Path) -> None:
    env = {"EVALSTREAM_KAFKA_BOOTSTRAP": empty_broker, "EVALSTREAM_DATA_DIR": str(tmp_path)}
    first = cli("topics", "init", "--partitions", "3", "--retention-hours", "24", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == len(topics.ALL)

    again = cli("topics", "init", "--partitions", "3", env=env)
    assert again.returncode == 0 and "created" not in again.stdout and again.stdout.count("exists") == len(topics.ALL)

    bigger = cli("topics", "init", "--partitions", "6", env=env)
    assert bigger.returncode == 0
    assert bigger.stdout.count("wanted 6") == len(topics.ALL) and "nothing was changed" in bigger.stderr

    listed = cli("topics", "list", env=env)
    assert listed.returncode == 0
    assert all(re.search(re.escape(name) + r"\s*│\s*3\s", listed.stdout) for name in topics.ALL), listed.stdout
