"""Fixtures shared by every suite (suite-specific ones live next to their tests)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.openai_server import OpenAIServer

# `tests.support` must import under plain `pytest` too, not only `python -m pytest` (which adds the cwd).
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


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
