"""`<data_dir>/run.json`: how CLI commands find the running embedded stack (broker, query endpoint, each
worker's metrics endpoint). Writers take a lock: several worker processes may share a data dir."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson


def read_run_file(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def update_run_file(path: Path, **fields: Any) -> None:
    with _locked(path):
        _write(path, {**read_run_file(path), **fields})


def set_run_entry(path: Path, key: str, name: str, value: Any) -> None:
    """One entry of a map in the file (`metrics_urls` by worker pid); None removes it."""
    with _locked(path):
        data = read_run_file(path)
        entries = {k: v for k, v in (data.get(key) or {}).items() if k != name}
        if value is not None:
            entries[name] = value
        if entries:
            data[key] = entries
        else:
            data.pop(key, None)
        _store(path, data)


def clear_run_file(path: Path, *keys: str) -> None:
    with _locked(path):
        data = read_run_file(path)
        for key in keys:
            data.pop(key, None)
        _store(path, data)


def _store(path: Path, data: dict[str, Any]) -> None:
    if data:
        _write(path, data)
    else:
        path.unlink(missing_ok=True)
