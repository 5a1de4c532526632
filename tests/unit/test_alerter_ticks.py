"""worker/alerter.py: ticks go only to partitions where an alert group has state to advance. Tansu keeps
every record, so a tick a second to every partition of an idle stack grows the broker for nothing."""

from __future__ import annotations

from types import SimpleNamespace as NS
from typing import Any

from pipeline import topics
from pipeline.worker.alerter import TICK_KEY, Alerter


class Context:
    def __init__(self, partitions: int) -> None:
        self.sent: list[tuple[str, bytes, int | None]] = []
        self.app = NS(assignor=NS(assigned_actives=lambda: [
            *(NS(topic=topics.ALERT_OBSERVATIONS, partition=p) for p in range(partitions)),
            NS(topic=topics.SPANS, partition=0)]))

    async def send(self, topic: str, key: Any, value: bytes, partition: int | None = None) -> None:
        self.sent.append((topic, key, partition))


async def test_ticks_go_only_to_partitions_holding_an_alert_groups_state() -> None:
    ctx = Context(partitions=3)
    table: dict[str, dict[str, Any]] = {}
    alerter = Alerter(ctx, table, channel=None)  # type: ignore[arg-type]
    await alerter.send_ticks()
    assert ctx.sent == []  # nothing to advance anywhere: no record at all

    table["errors|checkout"] = {"p": 2, "alert": "errors"}
    table["errors|search"] = {"p": 2, "alert": "errors"}
    table["latency|*"] = {"p": 0, "alert": "latency"}
    await alerter.send_ticks()
    assert sorted(p for t, k, p in ctx.sent if t == topics.ALERT_OBSERVATIONS and k == TICK_KEY) == [0, 2]
    assert all(t == topics.ALERT_OBSERVATIONS for t, _, _ in ctx.sent)
