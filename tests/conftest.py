"""Fixtures shared by every suite (suite-specific ones live next to their tests)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from tests.support.openai_server import OpenAIServer

# `tests.support` must import under plain `pytest` too, not only `python -m pytest` (which adds the cwd).
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# Property-based tests (hypothesis): a quick profile for `make test`, a long one with `--long` or
# EVALSTREAM_LONG=1. No example database: nothing is written into the checkout; a failure prints the
# falsifying example and a `@reproduce_failure` blob instead.
_FUZZ = {"deadline": None, "database": None, "print_blob": True,
         "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("evalstream", max_examples=200, **_FUZZ)
settings.register_profile("evalstream-long", max_examples=5_000, **_FUZZ)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run property-based tests with many more examples (also: EVALSTREAM_LONG=1)")


def pytest_configure(config: pytest.Config) -> None:
    long = config.getoption("--long") or os.environ.get("EVALSTREAM_LONG", "") not in ("", "0")
    settings.load_profile("evalstream-long" if long else "evalstream")
    if long:  # the fault tests read it for their long variants (more traffic, minute-long outages)
        os.environ["EVALSTREAM_LONG"] = "1"


@pytest.fixture(scope="session")
def _openai_server_session() -> Iterator[OpenAIServer]:
    from tests.support.openai_server import OpenAIServer

    with OpenAIServer() as server:
        yield server


@pytest.fixture
def openai_server(_openai_server_session: OpenAIServer) -> OpenAIServer:
    """A local OpenAI-compatible server (`.base_url`, `.requests`, `.reply_with(...)`), fresh for each test."""
    _openai_server_session.reset()
    return _openai_server_session
