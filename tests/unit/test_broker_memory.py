"""The embedded broker's memory watch: growth, hours left, the warning levels, and the watch's publishing."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pipeline import broker_memory
from pipeline.broker_memory import (
    BrokerMemoryWatch,
    MemorySample,
    growth_per_s,
    hours_left,
    warn_threshold_bytes,
    warning_level,
    warning_text,
)

MB = 2**20
GB = 2**30


def samples(rss_by_second: list[tuple[float, int]]) -> list[MemorySample]:
    return [MemorySample(t, rss) for t, rss in rss_by_second]


def test_growth_is_the_slope_over_the_window() -> None:
    # 1 MB per second for ten minutes
    assert growth_per_s(samples([(t, 100 * MB + t * MB) for t in range(0, 601, 30)])) == pytest.approx(MB)


def test_growth_ignores_samples_older_than_the_window() -> None:
    old = [(t, 0) for t in range(0, 600, 30)]  # flat for ten minutes, then 2 MB/s for ten more
    new = [(600 + t, 2 * MB * t) for t in range(0, 601, 30)]
    assert growth_per_s(samples(old + new), window_s=600) == pytest.approx(2 * MB)


def test_growth_is_unknown_right_after_start() -> None:
    assert growth_per_s([]) is None
    assert growth_per_s(samples([(0, MB)])) is None
    assert growth_per_s(samples([(0, MB), (30, 2 * MB)]), window_s=600) is None  # 30 s of 600: too little
    assert growth_per_s(samples([(0, MB), (60, 2 * MB)]), window_s=600) == pytest.approx(MB / 60)


def test_flat_or_shrinking_memory_has_no_end() -> None:
    assert hours_left(10 * GB, 0.0) is None
    assert hours_left(10 * GB, -MB) is None
    assert hours_left(None, MB) is None
    assert hours_left(10 * GB, None) is None
    assert hours_left(36 * GB, 10 * MB) == pytest.approx(36 * 1024 / 10 / 3600)


def test_threshold_is_the_setting_else_a_quarter_of_the_machine() -> None:
    assert warn_threshold_bytes(512, 24 * GB) == 512 * MB
    assert warn_threshold_bytes(None, 24 * GB) == 6 * GB
    assert warn_threshold_bytes(None, None) is None


@pytest.mark.parametrize(("rss_gb", "level"), [(0, 0), (5.99, 0), (6, 1), (8.99, 1), (9, 2), (12, 3), (15.5, 4)])
def test_a_level_at_the_threshold_then_at_every_further_half(rss_gb: float, level: int) -> None:
    assert warning_level(int(rss_gb * GB), 6 * GB) == level


def test_the_warning_says_what_it_holds_how_fast_it_grows_and_what_to_do() -> None:
    text = warning_text(7 * GB, 1 * GB / 3600, 14 * GB)
    assert "7.00 GiB" in text and "1.00 GiB/h" in text and "about 14.0 h" in text
    assert "Restarting `evalstream up`" in text and "EVALSTREAM_KAFKA_BOOTSTRAP" in text
    assert "growing" not in warning_text(7 * GB, None, 14 * GB)


def test_the_watch_publishes_every_sample_and_warns_once_per_level(monkeypatch: pytest.MonkeyPatch) -> None:
    rss = iter([100 * MB, 600 * MB, 700 * MB, 1600 * MB, 1700 * MB])
    monkeypatch.setattr(broker_memory, "process_rss_bytes", lambda pid: next(rss))
    monkeypatch.setattr(broker_memory, "meminfo_bytes", lambda field: 4 * GB)
    published: list[dict[str, Any]] = []
    warnings: list[str] = []
    watch = BrokerMemoryWatch(1234, interval_s=30, warn_mb=512, publish=published.append, warn=warnings.append)
    for _ in range(5):
        watch.check()
    assert [p["rss_mb"] for p in published] == [100, 600, 700, 1600, 1700]
    assert all(p["pid"] == 1234 and p["warn_at_mb"] == 512 for p in published)
    # 600 MB passes 512 (level 1); 700 MB stays in it; 1600 MB is level 5 (512 + 4 x 256 <= 1600): one more
    assert len(warnings) == 2 and "0.59 GiB" in warnings[0] and "1.56 GiB" in warnings[1]


def test_a_broker_that_is_gone_is_not_published(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_memory, "process_rss_bytes", lambda pid: None)
    published: list[dict[str, Any]] = []
    watch = BrokerMemoryWatch(1234, interval_s=30, warn_mb=1, publish=published.append, warn=published.append)
    assert watch.check() is None and published == []


def test_this_process_rss_is_read_from_proc() -> None:
    rss = broker_memory.process_rss_bytes(os.getpid())
    assert rss is not None and rss > MB
    assert broker_memory.process_rss_bytes(2**22 + 12345) is None  # above pid_max: no such process
    total = broker_memory.meminfo_bytes("MemTotal")
    assert total is not None and total > 0


def test_status_reads_the_rss_now_and_says_when_the_broker_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = {"pid": 4321, "rss_mb": 100.0, "growth_mb_per_h": 50.0, "hours_left": 9.5}
    assert broker_memory.live_status(None) is None
    assert broker_memory.live_status({"pid": "x"}) is None
    monkeypatch.setattr(broker_memory, "is_broker", lambda pid: False)  # gone, or its pid reused by another
    assert broker_memory.live_status(entry) == {**entry, "running": False}
    monkeypatch.setattr(broker_memory, "is_broker", lambda pid: True)
    monkeypatch.setattr(broker_memory, "process_rss_bytes", lambda pid: 300 * MB)
    assert broker_memory.live_status(entry) == {**entry, "running": True, "rss_mb": 300.0}


def test_only_a_tansu_process_counts_as_the_broker() -> None:
    assert not broker_memory.is_broker(os.getpid())  # this is python, not tansu
    assert not broker_memory.is_broker(2**22 + 12345)
