"""pipeline/worker/transport.py: the assignor keeps a worker consuming when Faust's own check of an assignment
fails (members of different roles in one group), instead of letting the assertion stop its coordinator; table
recovery seeks the stream partitions to their committed offsets before it resumes them; a fetch never takes
the records of a partition Faust has paused."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.fetcher import Fetcher, FetchResult
from faust.assignor import PartitionAssignor
from faust.types import TP

from pipeline.rules import parse_rules
from pipeline.settings import Settings
from pipeline.worker.app import create_app
from pipeline.worker.transport import ActivePartitions, RoleTolerantAssignor, SeekBeforeResumeRecovery


def test_the_app_uses_the_tolerant_assignor(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, roles="assembler")
    app = create_app(settings, parse_rules({"rules": []}), "127.0.0.1:1")
    assert isinstance(app.assignor, RoleTolerantAssignor)


def test_a_disagreeing_assignment_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    def faust_check(self: Any, assignment: Any) -> None:
        self.seen = assignment
        raise AssertionError("[TP(topic='evalstream-assembly-changelog', partition=1)] != []")

    monkeypatch.setattr(PartitionAssignor, "on_assignment", faust_check)
    assignor = RoleTolerantAssignor.__new__(RoleTolerantAssignor)
    with caplog.at_level(logging.WARNING):
        assignor.on_assignment("the assignment")
    assert assignor.seen == "the assignment"  # Faust's own handling ran
    assert "going on with Kafka's assignment" in caplog.text and "assembly-changelog" in caplog.text


class _RecordingConsumer:
    """What table recovery does to the consumer once the tables are recovered, in order. `perform_seek` awaits
    its round trip, as the real one does: whatever is resumed by then is being read from the wrong offsets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.resumed: set[TP] = set()
        self.resumed_during_seek: set[TP] = set()

    def assignment(self) -> set[TP]:
        return {TP("evalstream.spans.v1", 0), TP("evalstream.spans.v1", 1), TP("evalstream-assembly-changelog", 0),
                TP("evalstream-assembly-changelog", 1)}

    async def perform_seek(self) -> None:
        self.calls.append(("seek", None))
        await asyncio.sleep(0.01)
        self.resumed_during_seek |= {tp for tp in self.resumed if not tp.topic.endswith("-changelog")}
        self.calls.append(("sought", None))

    def resume_partitions(self, tps: set[TP]) -> None:
        self.resumed |= set(tps)
        self.calls.append(("resume", frozenset(tps)))

    def resume_flow(self) -> None:
        self.calls.append(("resume_flow", None))


class _Fetcher:
    async def maybe_start(self) -> None:
        pass


def test_recovery_seeks_the_stream_partitions_before_it_resumes_them(tmp_path: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust 0.15.3 resumes the stream partitions, then seeks them to their committed offsets. With the flow
    already on (recovery read the changelogs), the assembler handled records from where its consumer stood
    during the seek; the seek then reset the read offsets under them and emptied the agents' queues, and the
    record in each queue was never handled, and committed past as a gap (one span of a trace lost after the
    assembler's restart in tests/integration/test_ledger_faults.py). Seeking first leaves nothing to race."""
    settings = Settings(data_dir=tmp_path, roles="assembler")
    app = create_app(settings, parse_rules({"rules": []}), "127.0.0.1:1")
    recovery = app.tables.recovery
    assert isinstance(recovery, SeekBeforeResumeRecovery)
    consumer = _RecordingConsumer()
    app.consumer = consumer
    monkeypatch.setattr(type(app), "_fetcher", _Fetcher(), raising=False)
    monkeypatch.setattr(app.assignor, "assigned_standbys", set)

    async def wait(coro: Any, timeout: float | None = None) -> None:  # Faust's stops on a new rebalance; none here
        await coro

    monkeypatch.setattr(recovery, "_wait", wait)
    app.consumer_generation_id = 7

    asyncio.run(recovery.on_recovery_completed(generation_id=7))

    assert consumer.resumed_during_seek == set()
    steps = [name for name, _ in consumer.calls]
    assert steps == ["seek", "sought", "resume", "resume_flow"], consumer.calls
    assert consumer.calls[2][1] == {TP("evalstream.spans.v1", 0), TP("evalstream.spans.v1", 1)}
    assert recovery.completed.is_set() and app.flow_control.is_active()


class _Records:
    """aiokafka's PartitionRecords as FetchResult reads them: records from `fetch_offset` on."""

    def __init__(self, fetch_offset: int, count: int) -> None:
        self._offsets = iter(range(fetch_offset, fetch_offset + count))
        self.next_fetch_offset = fetch_offset

    def __iter__(self) -> _Records:
        return self

    def __next__(self) -> Any:
        offset = next(self._offsets)
        self.next_fetch_offset = offset + 1
        return SimpleNamespace(offset=offset)


class _Position:
    def __init__(self, position: int) -> None:
        self.position, self.paused = position, False

    def consumed_to(self, offset: int) -> None:
        self.position = offset


def _aiokafka_fetcher(tp: TP, position: _Position, fetch_offset: int, count: int) -> Any:
    """The state aiokafka's `Fetcher.fetched_records` reads: a prefetched result for one partition (aiokafka
    prefetches every assigned partition; Faust's pauses are its own)."""
    assignment = SimpleNamespace(active=True, state_value=lambda _tp: position)
    result = FetchResult(tp, assignment=assignment, partition_records=_Records(fetch_offset, count), backoff=0)
    return SimpleNamespace(_subscriptions=SimpleNamespace(reassignment_in_progress=False, is_assigned=lambda _tp: True),
                           _records={tp: result}, _notify=lambda _future: None, _wait_consume_future=None,
                           _closed=False)


def test_a_fetch_takes_no_record_of_a_paused_partition_when_no_partition_is_active() -> None:
    """aiokafka's `fetched_records` reads an empty partition set as "every partition", and Faust hands it its
    own set of active partitions, which the app's thread empties when table recovery pauses the changelogs
    while the stream partitions are still paused for their seek. A fetch waiting in the consumer thread then
    took the stream partitions' records (171..260 here), moving the position past them, and Faust dropped them
    unread and later committed past them as a gap. The consumer thread hands aiokafka a view that is never
    empty: nothing is taken until a partition is resumed, and then from where it was sought to."""
    spans, changelog = TP("evalstream.spans.v1", 2), TP("evalstream-assembly-changelog", 2)

    bare = _Position(171)
    assert asyncio.run(Fetcher.fetched_records(_aiokafka_fetcher(spans, bare, 171, 90), set(), timeout=0))
    assert bare.position == 261  # the premise: aiokafka took a paused partition's records for an empty set

    active = {changelog}  # Faust's set while recovery reads the changelogs; the fetch was asked for these
    view = ActivePartitions(active)
    position = _Position(171)
    fetcher = _aiokafka_fetcher(spans, position, 171, 90)
    active.discard(changelog)  # recovery done: the changelogs paused as well
    assert asyncio.run(Fetcher.fetched_records(fetcher, view, timeout=0)) == {}
    assert position.position == 171

    active.add(spans)  # resumed after the seek
    taken = asyncio.run(Fetcher.fetched_records(fetcher, view, timeout=0))
    assert [r.offset for r in taken[spans]] == list(range(171, 261)) and position.position == 261
