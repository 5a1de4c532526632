"""In-process counters, shown by `/health` and `evalstream status` (a Prometheus endpoint comes later)."""

from __future__ import annotations

from collections import Counter


class Counters:
    def __init__(self) -> None:
        self._values: Counter[str] = Counter()
        self._last: dict[str, float] = {}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> str:
        if not labels:
            return name
        return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        self._values[self._key(name, labels)] += amount

    def observe(self, name: str, value: float) -> None:
        self._last[name] = value

    def get(self, name: str, **labels: str) -> float:
        return self._values.get(self._key(name, labels), 0)

    def snapshot(self) -> dict[str, float]:
        return {**dict(self._values), **{f"{k}_last": v for k, v in self._last.items()}}
