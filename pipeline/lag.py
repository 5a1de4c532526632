"""Consumer lag from offsets this process has seen, never from the broker's end offsets (docs/metrics.md).

Tansu answers ListOffsets(latest) with the base offset of the partition's last record batch + 1,
so a partition whose last batch holds many records looks shorter than it is. The end of a
partition is therefore only ever an offset that a record was actually read at, + 1: by a
consumer of this process (`fetched`, `processed`) or by the probe, which reads the last
records (`worker/lag_probe.py`). Pure: the worker feeds `LagTracker`, `partition_lag` does the sums.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

TP = tuple[str, int]  # (topic, partition)


@dataclass
class Progress:
    """One consumer group on one partition, in this process."""

    fetched_next: int = 0  # offset + 1 of the newest record handed to the consumer
    processed_next: int = 0  # offset + 1 of the newest record it finished
    processed_ts: float | None = None  # that record's timestamp (epoch seconds)


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    records: int
    seconds: float


class LagTracker:
    """What this process's consumers fetched and processed, per consumer group and partition, and
    which partitions each group has here now (a callable per group, asked at every sample)."""

    def __init__(self) -> None:
        self._progress: dict[str, dict[TP, Progress]] = defaultdict(dict)
        self._assigned: dict[str, Callable[[], Iterable[TP]]] = {}

    def watch(self, group: str, assigned: Callable[[], Iterable[TP]]) -> None:
        self._assigned[group] = assigned

    def unwatch(self, group: str) -> None:
        self._assigned.pop(group, None)
        self._progress.pop(group, None)

    def _get(self, group: str, topic: str, partition: int) -> Progress:
        table = self._progress[group]
        tp = (topic, partition)
        found = table.get(tp)
        if found is None:
            found = table[tp] = Progress()
        return found

    def fetched(self, group: str, topic: str, partition: int, offset: int) -> None:
        p = self._get(group, topic, partition)
        p.fetched_next = max(p.fetched_next, offset + 1)

    def processed(self, group: str, topic: str, partition: int, offset: int, timestamp_s: float | None) -> None:
        p = self._get(group, topic, partition)
        if offset + 1 >= p.processed_next:  # concurrent agents may finish out of order: keep the newest
            p.processed_next = offset + 1
            p.processed_ts = timestamp_s
        p.fetched_next = max(p.fetched_next, p.processed_next)

    def assignments(self) -> dict[str, set[TP]]:
        """Each watched group's partitions here now; forgets the progress of partitions it lost, so a
        partition that comes back later is not measured from a stale offset."""
        out: dict[str, set[TP]] = {}
        for group, assigned in list(self._assigned.items()):
            try:
                current = {(topic, int(partition)) for topic, partition in assigned()}
            except Exception:  # noqa: BLE001 - a consumer mid-rebalance: measure it next time
                current = set()
            out[group] = current
            table = self._progress[group]
            for tp in [tp for tp in table if tp not in current]:
                del table[tp]
        return out

    def progress(self, group: str, tp: TP) -> Progress | None:
        return self._progress.get(group, {}).get(tp)

    def seen_end(self, tp: TP) -> int:
        """One past the newest offset any consumer here has seen on the partition (0: none)."""
        return max((table[tp].fetched_next for table in self._progress.values() if tp in table), default=0)


def position(progress: Progress | None, committed: int | None, log_start: int | None) -> int:
    """The next offset the group will process: past what it processed here, or its committed offset,
    else where a new group starts (the log start: auto_offset_reset=earliest)."""
    candidates = [progress.processed_next if progress else 0, committed or 0, log_start or 0]
    return max(candidates)


def partition_lag(group: str, tp: TP, *, end: int, next_offset: int, head_ts: float | None,
                  last_ts: float | None, now: float) -> PartitionLag:
    """records = verified end - next offset to process (never negative); seconds = age of the oldest
    waiting record (`head_ts`, read by the probe), else of the newest processed one (`last_ts`); both 0
    when nothing waits."""
    records = max(0, end - next_offset)
    seconds = 0.0
    if records:
        ref = head_ts if head_ts is not None else last_ts
        seconds = max(0.0, now - ref) if ref is not None else 0.0
    return PartitionLag(group, tp[0], tp[1], records, round(seconds, 3))
