"""`<data_dir>/run.json`: how CLI commands find the running embedded stack (broker, query endpoint)."""

from __future__ import annotations

import os
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


def update_run_file(path: Path, **fields: Any) -> None:
    _write(path, {**read_run_file(path), **fields})


def clear_run_file(path: Path, *keys: str) -> None:
    data = read_run_file(path)
    for key in keys:
        data.pop(key, None)
    if data:
        _write(path, data)
    else:
        path.unlink(missing_ok=True)
