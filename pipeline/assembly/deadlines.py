"""Which traces of a partition are due: a heap with lazy deletion, rebuilt from the table on assignment."""

from __future__ import annotations

import heapq


class DeadlineIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[float, str]]] = {}
        self._current: dict[int, dict[str, float]] = {}

    def has_partition(self, partition: int) -> bool:
        return partition in self._current

    def init_partition(self, partition: int) -> None:
        self._heaps[partition] = []
        self._current[partition] = {}

    def drop_partition(self, partition: int) -> None:
        self._heaps.pop(partition, None)
        self._current.pop(partition, None)

    def clear(self) -> None:
        self._heaps.clear()
        self._current.clear()

    def set(self, partition: int, trace_id: str, at: float) -> None:
        current = self._current.setdefault(partition, {})
        if current.get(trace_id) == at:
            return
        current[trace_id] = at
        heapq.heappush(self._heaps.setdefault(partition, []), (at, trace_id))

    def remove(self, partition: int, trace_id: str) -> None:
        self._current.get(partition, {}).pop(trace_id, None)

    def pop_due(self, partition: int, now: float) -> list[str]:
        heap = self._heaps.get(partition, [])
        current = self._current.get(partition, {})
        due: list[str] = []
        while heap and heap[0][0] <= now:
            at, trace_id = heapq.heappop(heap)
            if current.get(trace_id) == at:
                del current[trace_id]
                due.append(trace_id)
        return due

    def due_within(self, partition: int, at: float) -> bool:
        """Whether anything of the partition is due by `at`; True for a partition not indexed yet (its first
        event builds the index from the table)."""
        if partition not in self._current:
            return True
        heap, current = self._heaps.get(partition, []), self._current[partition]
        while heap and current.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # an entry replaced or removed since
        return bool(heap) and heap[0][0] <= at

    def __len__(self) -> int:
        return sum(len(c) for c in self._current.values())
