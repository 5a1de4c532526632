"""pipeline/embedded.py: the partition count of the embedded stack, and how an attaching process learns it.

`evalstream up` without EVALSTREAM_KAFKA_BOOTSTRAP starts Tansu with EMBEDDED_TOPIC_PARTITIONS per topic (unless
EVALSTREAM_TOPIC_PARTITIONS is set) and records the count in run.json; `evalstream worker` (and `otlp`,
`backfill`, ...) that find the broker there must partition, key and size their tables the same way, or their
records go to partitions the topics lack and their tables disagree with the changelogs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.cli.common import attach
from pipeline.embedded import (
    EMBEDDED_TOPIC_PARTITIONS,
    RUN_FIELDS,
    attached_settings,
    embedded_settings,
    run_fields,
)
from pipeline.errors import ConfigError
from pipeline.runfile import clear_run_file, read_run_file, update_run_file
from pipeline.settings import Settings

BOOTSTRAP = "127.0.0.1:9092"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Settings as a process started with these EVALSTREAM_* variables (and no others) would read them."""

    def settings(**variables: str) -> Settings:
        for name in list(os.environ):
            if name.startswith("EVALSTREAM_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("EVALSTREAM_DATA_DIR", str(tmp_path))
        for name, value in variables.items():
            monkeypatch.setenv(f"EVALSTREAM_{name.upper()}", value)
        return Settings()

    return settings


def test_the_embedded_count_is_fewer_than_the_production_default_which_stays(env) -> None:
    production = env()
    assert production.topic_partitions == 8  # compose and k8s with a real Kafka: unchanged
    assert EMBEDDED_TOPIC_PARTITIONS == 2 < production.topic_partitions
    assert embedded_settings(production).topic_partitions == EMBEDDED_TOPIC_PARTITIONS


@pytest.mark.parametrize("explicit", ["1", "8", "12"])
def test_an_explicit_partition_count_wins_over_the_embedded_default(env, explicit: str) -> None:
    assert embedded_settings(env(topic_partitions=explicit)).topic_partitions == int(explicit)


def test_embedded_settings_change_nothing_else(env) -> None:
    plain = env(fetch_max_wait_ms="10", quiet_period_s="1")
    fitted = embedded_settings(plain)
    assert fitted.model_dump(exclude={"topic_partitions"}) == plain.model_dump(exclude={"topic_partitions"})


# The processes that share one embedded stack: `up` (its env), then a worker attaching through run.json (its env).
AGREE = [
    pytest.param({}, {}, EMBEDDED_TOPIC_PARTITIONS, id="both-unset"),
    pytest.param({"topic_partitions": "5"}, {}, 5, id="up-set-worker-unset"),
    pytest.param({"topic_partitions": "5"}, {"topic_partitions": "5"}, 5, id="both-set-alike"),
    pytest.param({}, {"topic_partitions": str(EMBEDDED_TOPIC_PARTITIONS)}, EMBEDDED_TOPIC_PARTITIONS,
                 id="worker-names-the-embedded-count"),
]


@pytest.mark.parametrize(("up_env", "worker_env", "expected"), AGREE)
def test_an_attaching_worker_uses_the_partition_count_up_created_the_topics_with(
        env, up_env: dict[str, str], worker_env: dict[str, str], expected: int) -> None:
    up = embedded_settings(env(**up_env))
    run = run_fields(up, BOOTSTRAP)
    worker = attached_settings(env(**worker_env), run)
    assert up.topic_partitions == worker.topic_partitions == expected


@pytest.mark.parametrize(("up_env", "worker_env", "expected"), AGREE)
def test_the_count_travels_through_run_json_to_the_clis_attach(
        env, up_env: dict[str, str], worker_env: dict[str, str], expected: int) -> None:
    up = embedded_settings(env(**up_env))
    update_run_file(up.run_file, **run_fields(up, BOOTSTRAP))
    worker, bootstrap = attach(env(**worker_env))
    assert (bootstrap, worker.topic_partitions) == (BOOTSTRAP, expected) == (BOOTSTRAP, up.topic_partitions)
    clear_run_file(up.run_file, *RUN_FIELDS)  # what `up` clears when its broker stops
    assert "topic_partitions" not in read_run_file(up.run_file) and "kafka_bootstrap" not in read_run_file(up.run_file)


def test_an_attaching_worker_with_a_different_explicit_count_is_refused(env) -> None:
    run = run_fields(embedded_settings(env()), BOOTSTRAP)
    with pytest.raises(ConfigError, match=f"EVALSTREAM_TOPIC_PARTITIONS=8.*{EMBEDDED_TOPIC_PARTITIONS} partitions"):
        attached_settings(env(topic_partitions="8"), run)


def test_a_named_broker_keeps_the_processes_own_settings(env) -> None:
    """With EVALSTREAM_KAFKA_BOOTSTRAP the broker is not `up`'s embedded one: production settings, as they are."""
    run = run_fields(embedded_settings(env()), BOOTSTRAP)
    named = env(kafka_bootstrap="kafka:9092")
    assert attached_settings(named, run) is named and named.topic_partitions == 8


@pytest.mark.parametrize("run", [{}, {"kafka_bootstrap": BOOTSTRAP}, {"kafka_bootstrap": BOOTSTRAP,
                                                                       "topic_partitions": "2"},
                                 {"kafka_bootstrap": BOOTSTRAP, "topic_partitions": 0}])
def test_a_run_file_without_a_usable_count_leaves_the_settings(env, run: dict) -> None:
    """A run.json from an `up` that did not record the count (it used its own settings, 8 by default)."""
    plain = env()
    assert attached_settings(plain, run) is plain
