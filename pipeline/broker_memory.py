"""The embedded broker's memory: what `evalstream up` watches, warns about and writes for `evalstream status`.

Tansu 0.6 (the `memory://` engine of the embedded default) keeps every record it was sent, and gives nothing
back while it runs: it ignores `retention.ms` / `retention.bytes`, does not compact, and answers DeleteRecords
with a panic (docs/benchmarks.md, "Issue 22"). Only deleting a whole topic frees memory, which a running
pipeline cannot do without losing records. So the embedded stack says so before it hurts: `up` samples the
broker's RSS (`BrokerMemoryWatch`), writes it with its growth and the hours the machine's available memory
lasts at that growth to run.json (`evalstream status` shows them), and warns once the RSS passes
`embedded_broker_warn_mb` (default a quarter of the machine's memory), and again at every further half of it.

The arithmetic is pure (`growth_per_s`, `hours_left`, `warn_threshold_bytes`, `warning_level`); the reads of
/proc and the thread are thin around it. Only `up` runs it: a production Kafka has its own retention.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GROWTH_WINDOW_S = 600.0  # the growth rate is the last ten minutes'
DEFAULT_WARN_SHARE = 0.25  # of the machine's memory, when `embedded_broker_warn_mb` is not set
RUN_FILE_KEY = "embedded_broker"


@dataclass(frozen=True)
class MemorySample:
    at_s: float  # monotonic seconds
    rss_bytes: int


def growth_per_s(samples: Sequence[MemorySample], window_s: float = GROWTH_WINDOW_S) -> float | None:
    """Bytes per second over the last `window_s` (least squares over the samples in it); None with fewer
    than two samples in the window or less than a tenth of it covered, as after a start."""
    if not samples:
        return None
    end = samples[-1].at_s
    recent = [s for s in samples if s.at_s >= end - window_s]
    if len(recent) < 2 or recent[-1].at_s - recent[0].at_s < window_s / 10:
        return None
    mean_t = sum(s.at_s for s in recent) / len(recent)
    mean_m = sum(s.rss_bytes for s in recent) / len(recent)
    var = sum((s.at_s - mean_t) ** 2 for s in recent)
    if var == 0:
        return None
    return sum((s.at_s - mean_t) * (s.rss_bytes - mean_m) for s in recent) / var


def hours_left(available_bytes: int | None, growth_bytes_per_s: float | None) -> float | None:
    """How long the machine's available memory lasts at this growth; None when it does not grow (or unknown)."""
    if available_bytes is None or growth_bytes_per_s is None or growth_bytes_per_s <= 0:
        return None
    return available_bytes / growth_bytes_per_s / 3600


def warn_threshold_bytes(warn_mb: float | None, mem_total_bytes: int | None) -> int | None:
    """The RSS to warn at: the setting, else a quarter of the machine's memory (None if neither is known)."""
    if warn_mb is not None:
        return int(warn_mb * 2**20)
    if mem_total_bytes:
        return int(mem_total_bytes * DEFAULT_WARN_SHARE)
    return None


def warning_level(rss_bytes: int, threshold_bytes: int) -> int:
    """0 below the threshold, 1 from it, then one more at every further half of it: 1.5x is 2, 2x is 3..."""
    if rss_bytes < threshold_bytes:
        return 0
    return 1 + int((rss_bytes - threshold_bytes) // (threshold_bytes / 2))


def warning_text(rss_bytes: int, growth_bytes_per_s: float | None, available_bytes: int | None) -> str:
    rate = ""
    if growth_bytes_per_s is not None and growth_bytes_per_s > 0:
        left = hours_left(available_bytes, growth_bytes_per_s)
        rate = f", growing {growth_bytes_per_s * 3600 / 2**30:.2f} GiB/h"
        if left is not None and available_bytes is not None:
            rate += f": the {available_bytes / 2**30:.1f} GiB this machine has available last about {left:.1f} h"
    return (f"the embedded broker (Tansu) holds {rss_bytes / 2**30:.2f} GiB{rate}. It keeps every record in memory "
            f"and gives none back while it runs. Restarting `evalstream up` frees it (stored traces stay in "
            f"ClickHouse; what was not yet processed is lost); for long runs use Apache Kafka "
            f"(EVALSTREAM_KAFKA_BOOTSTRAP). See docs/operations.md, 'How long the embedded default lasts'.")


def process_rss_bytes(pid: int) -> int | None:
    """VmRSS of a process from /proc (None when it is gone or /proc has no such field)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def meminfo_bytes(field: str) -> int | None:
    """A field of /proc/meminfo (MemTotal, MemAvailable) in bytes, None where there is no /proc."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def snapshot(pid: int, rss_bytes: int, samples: Sequence[MemorySample], threshold_bytes: int | None,
             available_bytes: int | None) -> dict[str, Any]:
    """What run.json and `evalstream status` show of the broker."""
    growth = growth_per_s(samples)
    left = hours_left(available_bytes, growth)
    return {"pid": pid, "rss_mb": round(rss_bytes / 2**20, 1),
            "growth_mb_per_h": None if growth is None else round(growth * 3600 / 2**20, 1),
            "available_mb": None if available_bytes is None else round(available_bytes / 2**20),
            "hours_left": None if left is None else round(left, 2),
            "warn_at_mb": None if threshold_bytes is None else round(threshold_bytes / 2**20),
            "sampled_at": round(time.time(), 1)}


def is_broker(pid: int) -> bool:
    """Whether the process is a Tansu broker (a pid left in run.json by an `up` that died may be reused)."""
    try:
        return b"tansu" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def live_status(entry: Any) -> dict[str, Any] | None:
    """`evalstream status`'s view of run.json's broker entry: its RSS read now, the rest as last sampled; None
    when there is no entry, and `running: false` when its process is gone."""
    if not isinstance(entry, dict) or not isinstance(entry.get("pid"), int):
        return None
    rss = process_rss_bytes(entry["pid"]) if is_broker(entry["pid"]) else None
    if rss is None:
        return {**entry, "running": False}
    return {**entry, "running": True, "rss_mb": round(rss / 2**20, 1)}


class BrokerMemoryWatch:
    """A daemon thread: every `interval_s` it samples the broker's RSS, hands `publish` the snapshot (run.json)
    and calls `warn` with a sentence each time the RSS reaches a new warning level."""

    def __init__(self, pid: int, *, interval_s: float, warn_mb: float | None,
                 publish: Callable[[dict[str, Any]], None], warn: Callable[[str], None]) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.threshold = warn_threshold_bytes(warn_mb, meminfo_bytes("MemTotal"))
        self.publish = publish
        self.warn = warn
        self.samples: deque[MemorySample] = deque(maxlen=max(2, int(GROWTH_WINDOW_S / interval_s) + 2))
        self.warned_level = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-memory", daemon=True)

    def start(self) -> BrokerMemoryWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def check(self) -> dict[str, Any] | None:
        """One sample: publish it, and warn when a new level is reached. Returns the snapshot."""
        rss = process_rss_bytes(self.pid)
        if rss is None:
            return None
        self.samples.append(MemorySample(time.monotonic(), rss))
        available = meminfo_bytes("MemAvailable")
        shot = snapshot(self.pid, rss, self.samples, self.threshold, available)
        self.publish(shot)
        if self.threshold is not None:
            level = warning_level(rss, self.threshold)
            if level > self.warned_level:
                self.warned_level = level
                self.warn(warning_text(rss, growth_per_s(self.samples), available))
        return shot

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # a watch must not take `up` down
                log.warning("broker memory watch: a sample failed", exc_info=True)
            self._stop.wait(self.interval_s)
