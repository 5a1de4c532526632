"""pipeline/storage/sources.py: where a command finds the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import StorageError
from pipeline.settings import Settings
from pipeline.storage.sources import open_source


def test_a_data_dir_where_nothing_ran_is_named_and_left_empty(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(StorageError, match=f"no evalstream data in {tmp_path}"):
        open_source(settings)
    assert list(tmp_path.iterdir()) == []  # no empty store created as a side effect
