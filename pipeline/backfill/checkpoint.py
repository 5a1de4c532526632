"""Where a backfill got to: `<data_dir>/backfill/<identity>.json`, rewritten atomically after every page
whose messages the broker acknowledged. A kill loses at most the page in flight, which is sent again
(its jobs have the same ids, so storage replaces the rows)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

import orjson

from pipeline.backfill.spec import BackfillSpec
from pipeline.errors import ConfigError


@dataclass
class Checkpoint:
    backfill_id: str
    rules: list[str]
    since: str
    until: str | None
    project: str | None
    limit: int | None
    since_us: int  # the window, fixed on the first run
    until_us: int
    total: int  # traces in the window (capped by limit), counted on the first run
    started_at: float = field(default_factory=time.time)
    sent: int = 0
    messages: int = 0
    cursor: list | None = None  # [closed_at_us, trace_id] of the last acknowledged trace
    skipped: list[str] = field(default_factory=list)  # traces too large for one message
    send_s: float = 0.0  # seconds spent reading and sending, over every run
    runs: int = 0
    sent_all_at: float | None = None

    @classmethod
    def new(cls, spec: BackfillSpec, window_us: tuple[int, int], total: int) -> Checkpoint:
        return cls(spec.identity, list(spec.rules), spec.since, spec.until, spec.project, spec.limit,
                   window_us[0], window_us[1], total)

    @property
    def done(self) -> bool:
        return self.sent_all_at is not None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        try:
            data = orjson.loads(path.read_bytes())
            return cls(**data)
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"unreadable backfill checkpoint {path} ({exc}); run again with --restart") from None


def checkpoint_path(data_dir: Path, spec: BackfillSpec) -> Path:
    return data_dir / "backfill" / f"{spec.identity}.json"


class RunLock:
    """One process per backfill: `<identity>.lock` holds the pid; a dead holder's lock is taken over."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            pid = int(self.path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and _alive(pid):
            raise ConfigError(f"this backfill is already running (pid {pid}); lock file {self.path}")
        self.path.write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
