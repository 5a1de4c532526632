"""pipeline/lag.py and worker/metrics_service.measure_lag: consumer lag from offsets this process has seen."""

from __future__ import annotations

from pipeline.lag import LagTracker, PartitionLag, Progress, partition_lag, position
from pipeline.worker.metrics_service import measure_lag

T = ("evalstream.jobs.v1", 0)


def test_caught_up_reads_zero_records_and_zero_seconds() -> None:
    assert partition_lag("g", T, end=10, next_offset=10, head_ts=100.0, last_ts=50.0, now=500.0) == \
        PartitionLag("g", T[0], 0, 0, 0.0)


def test_lag_is_the_verified_end_minus_the_next_offset_and_the_age_of_the_oldest_waiting_record() -> None:
    lag = partition_lag("g", T, end=25, next_offset=10, head_ts=490.0, last_ts=400.0, now=500.0)
    assert (lag.records, lag.seconds) == (15, 10.0)


def test_without_the_waiting_record_the_newest_processed_one_dates_the_lag() -> None:
    lag = partition_lag("g", T, end=11, next_offset=10, head_ts=None, last_ts=480.0, now=500.0)
    assert (lag.records, lag.seconds) == (1, 20.0)
    assert partition_lag("g", T, end=11, next_offset=10, head_ts=None, last_ts=None, now=500.0).seconds == 0.0


def test_never_negative() -> None:
    lag = partition_lag("g", T, end=5, next_offset=9, head_ts=600.0, last_ts=None, now=500.0)  # clocks disagree
    assert (lag.records, lag.seconds) == (0, 0.0)
    lag = partition_lag("g", T, end=9, next_offset=5, head_ts=600.0, last_ts=None, now=500.0)
    assert (lag.records, lag.seconds) == (4, 0.0)


def test_position_prefers_what_was_processed_here_then_the_commit_then_the_log_start() -> None:
    assert position(Progress(processed_next=12), committed=10, log_start=0) == 12
    assert position(Progress(processed_next=3), committed=10, log_start=0) == 10  # came back from another worker
    assert position(None, committed=None, log_start=4) == 4  # a new group starts at the log start
    assert position(None, committed=None, log_start=None) == 0


def test_tracker_keeps_the_newest_processed_offset_when_acks_come_out_of_order() -> None:
    tracker = LagTracker()
    tracker.fetched("g", *T, 9)
    tracker.processed("g", *T, 7, 70.0)
    tracker.processed("g", *T, 5, 50.0)  # a concurrent agent finished an older one later
    p = tracker.progress("g", T)
    assert p == Progress(fetched_next=10, processed_next=8, processed_ts=70.0)
    tracker.processed("other", *T, 20, 1.0)
    assert tracker.seen_end(T) == 21 and tracker.seen_end(("nope", 0)) == 0


def test_tracker_forgets_partitions_a_group_lost() -> None:
    owned = {T, ("evalstream.jobs.v1", 1)}
    tracker = LagTracker()
    tracker.watch("g", lambda: owned)
    tracker.processed("g", "evalstream.jobs.v1", 1, 40, None)
    assert tracker.assignments() == {"g": owned}
    owned.discard(("evalstream.jobs.v1", 1))
    assert tracker.assignments() == {"g": {T}}
    assert tracker.progress("g", ("evalstream.jobs.v1", 1)) is None  # a later return starts from its commit


def test_a_failing_assignment_reads_as_nothing_owned() -> None:
    tracker = LagTracker()

    def mid_rebalance() -> list[tuple[str, int]]:
        raise AttributeError("no assignment yet")

    tracker.watch("g", mid_rebalance)
    assert tracker.assignments() == {"g": set()}


class FakeProbe:
    """What a broker holds: per partition, the record timestamps by offset."""

    def __init__(self, logs: dict[tuple[str, int], list[float]], committed: dict[str, dict]) -> None:
        self.logs = logs
        self._committed = committed
        self.head_reads: list[dict] = []

    async def ends(self, seen: dict) -> dict:
        return {tp: max(known, len(self.logs.get(tp, []))) for tp, known in seen.items()}

    async def committed(self, group: str, tps: set) -> dict:
        return {tp: off for tp, off in self._committed.get(group, {}).items() if tp in tps}

    async def log_starts(self, tps: set) -> dict:
        return {tp: 0 for tp in tps}

    async def first_timestamps(self, offsets: dict) -> dict:
        self.head_reads.append(dict(offsets))
        return {tp: self.logs[tp][off] for tp, off in offsets.items() if off < len(self.logs.get(tp, []))}


async def test_measure_lag_for_two_groups_on_one_partition() -> None:
    traces = ("evalstream.traces.v1", 0)
    probe = FakeProbe({traces: [100.0 + i for i in range(10)], T: [200.0, 201.0]},
                      committed={"evalstream-sink": {traces: 4}})
    tracker = LagTracker()
    tracker.watch("evalstream", lambda: {traces, T})
    tracker.watch("evalstream-sink", lambda: {traces})
    tracker.processed("evalstream", *traces, 6, 106.0)  # processed up to offset 6 here
    tracker.processed("evalstream", *T, 1, 201.0)  # caught up
    lags = {(lag.group, lag.topic): lag for lag in await measure_lag(tracker, probe)}  # type: ignore[arg-type]
    worker = lags[("evalstream", traces[0])]
    assert worker.records == 3 and worker.seconds > 0  # offsets 7, 8, 9 wait; the oldest is 7
    sink = lags[("evalstream-sink", traces[0])]
    assert sink.records == 6  # nothing processed here yet: from its committed offset 4
    assert lags[("evalstream", T[0])].records == 0 and lags[("evalstream", T[0])].seconds == 0
    # The two groups wait at different offsets of one partition: two reads of their first records.
    assert sorted(r[traces] for r in probe.head_reads) == [4, 7]


async def test_measure_lag_dates_the_backlog_by_its_oldest_record(monkeypatch) -> None:
    import pipeline.worker.metrics_service as service

    monkeypatch.setattr(service.time, "time", lambda: 1000.0)
    probe = FakeProbe({T: [900.0, 950.0, 990.0]}, committed={})
    tracker = LagTracker()
    tracker.watch("g", lambda: {T})
    [lag] = await measure_lag(tracker, probe)  # type: ignore[arg-type]
    assert (lag.records, lag.seconds) == (3, 100.0)
    tracker.processed("g", *T, 2, 990.0)
    [lag] = await measure_lag(tracker, probe)  # type: ignore[arg-type]
    assert (lag.records, lag.seconds) == (0, 0.0)


async def test_nothing_owned_nothing_measured() -> None:
    assert await measure_lag(LagTracker(), FakeProbe({}, {})) == []  # type: ignore[arg-type]
