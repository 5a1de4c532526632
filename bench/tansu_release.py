"""What the embedded broker (Tansu, memory:// engine) releases: one experiment per fresh broker.

    .venv/bin/python bench/tansu_release.py [--mb 200] [--value-kb 10] [--wait-s 60] [EXPERIMENT ...]

Each experiment starts its own broker (`pipeline.embedded.EmbeddedBroker`), writes `--mb` MB to one topic of
4 partitions (values of `--value-kb` KB), reads the broker's RSS (/proc/<pid>/status VmRSS) before, after
writing and after trying to release, and what a fresh consumer can still read from the start:

- `retention-create`: the topic is created with retention.ms=5000 and retention.bytes=1 MiB; wait `--wait-s`.
- `retention-alter`: created plain, then AlterConfigs sets retention.ms=5000 / retention.bytes=1 MiB; wait.
- `delete-records`: DeleteRecords (aiokafka `AIOKafkaAdminClient.delete_records`) up to the end of every
  partition, as counted by this script; wait.
- `delete-half`: DeleteRecords up to half of every partition: what a consumer still reads.
- `compact`: cleanup.policy=compact, every record written 20 times under the same 1/20 of the keys; wait.
- `delete-topic`: DeleteTopics (the upper bound: does memory come back at all?).
- `recreate-live`: a consumer group reads the topic and commits; the topic is deleted and created again while
  it runs, then as many records are written again: how many does the running consumer, and a new member of
  the group, read? (Whether recycling a topic under the pipeline could be safe.)
- `small-batches`: `--batches` batches of one 200-byte record each (as the pipeline's small produces are):
  RSS per batch held, and the broker's CPU while one idle consumer polls (10 ms fetch wait) with 0 and with
  that many batches held: does the cost of a poll grow with what the broker holds?

Prints one line per experiment and a JSON line per experiment. Modest CPU: one producer, no consumer group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int8, Int16, Int32, Schema, String

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.embedded import EmbeddedBroker

TOPIC = "release.test"
PARTITIONS = 4
RETENTION = {"retention.ms": "5000", "retention.bytes": str(1024 * 1024)}
EXPERIMENTS = ("retention-create", "retention-alter", "delete-records", "delete-half", "compact", "delete-topic",
               "recreate-live", "small-batches")


class IncrementalAlterConfigsResponse_v0(Response):
    API_KEY = 44
    API_VERSION = 0
    SCHEMA = Schema(("throttle_time_ms", Int32),
                    ("responses", Array(("error_code", Int16), ("error_message", String("utf-8")),
                                        ("resource_type", Int8), ("resource_name", String("utf-8")))))


class IncrementalAlterConfigsRequest_v0(RequestStruct):
    """Tansu 0.6 advertises IncrementalAlterConfigs (44) but not AlterConfigs (33), and aiokafka has only the
    latter; v0 is not a flexible version, so aiokafka's plain types encode it."""
    API_KEY = 44
    API_VERSION = 0
    RESPONSE_TYPE = IncrementalAlterConfigsResponse_v0
    SCHEMA = Schema(("resources", Array(("resource_type", Int8), ("resource_name", String("utf-8")),
                                        ("configs", Array(("name", String("utf-8")), ("config_operation", Int8),
                                                          ("value", String("utf-8")))))),
                    ("validate_only", Boolean))


class IncrementalAlterConfigsRequest(Request[IncrementalAlterConfigsRequest_v0]):
    API_KEY = 44

    def __init__(self, topic: str, configs: dict[str, str]) -> None:
        self.topic, self.configs = topic, configs

    def build(self, request_struct_class: type[IncrementalAlterConfigsRequest_v0]
              ) -> IncrementalAlterConfigsRequest_v0:
        SET, TOPIC_RESOURCE = 0, 2
        return request_struct_class([(TOPIC_RESOURCE, self.topic,
                                      [(name, SET, value) for name, value in self.configs.items()])], False)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def write(bootstrap: str, mb: float, value_kb: float, distinct_keys: int | None = None) -> dict[int, int]:
    """Write `mb` MB; returns how many records went to each partition (counted here: Tansu's end offsets are not
    trusted)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1024 * 1024,
                                max_request_size=16 * 1024 * 1024)
    await producer.start()
    value = b"x" * int(value_kb * 1024)
    n = int(mb * 1024 / value_kb)
    counts = dict.fromkeys(range(PARTITIONS), 0)
    try:
        pending = []
        for i in range(n):
            key = f"k{i % distinct_keys if distinct_keys else i}".encode()
            partition = i % PARTITIONS
            pending.append(await producer.send(TOPIC, value, key=key, partition=partition))
            counts[partition] += 1
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return counts


async def readable(bootstrap: str, idle_ms: int = 3000) -> tuple[int, dict[int, int]]:
    """Records a fresh consumer reads from the start of every partition, and the first offset it sees in each."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                max_partition_fetch_bytes=16 * 1024 * 1024)
    await consumer.start()
    parts = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    count, first = 0, {}
    try:
        while batches := await consumer.getmany(timeout_ms=idle_ms, max_records=5000):
            for tp, records in batches.items():
                count += len(records)
                first.setdefault(tp.partition, records[0].offset)
    finally:
        await consumer.stop()
    return count, first


async def offsets(bootstrap: str) -> dict[str, dict[int, int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    parts = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    try:
        begin = await consumer.beginning_offsets(parts)
        end = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    return {"begin": {tp.partition: o for tp, o in begin.items()}, "end": {tp.partition: o for tp, o in end.items()}}


async def describe(admin: AIOKafkaAdminClient) -> dict[str, Any]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)])
    out: dict[str, Any] = {}
    for response in responses:
        for resource in response.resources:
            out["error"] = resource[0]
            for entry in resource[4]:
                if entry[0] in ("retention.ms", "retention.bytes", "cleanup.policy"):
                    out[entry[0]] = entry[1]
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def poll_cost(bootstrap: str, pid: int, seconds: float) -> float:
    """The broker's CPU ms per second while a trickle goes through: one record to each partition every 20 ms, read
    by one consumer (10 ms fetch wait) that starts at the end. Tansu lists a partition's batches on every fetch
    below the high watermark, so this is what a reading pipeline pays per second."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=10)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    parts = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)

    async def trickle() -> None:
        while True:
            await asyncio.gather(*[await producer.send(TOPIC, b"t" * 200, partition=p) for p in range(PARTITIONS)])
            await asyncio.sleep(0.02)

    sending = asyncio.create_task(trickle())
    try:
        await consumer.getmany(timeout_ms=1000)
        before, started, seen = cpu_s(pid), time.monotonic(), 0
        while time.monotonic() - started < seconds:
            seen += sum(len(r) for r in (await consumer.getmany(timeout_ms=200)).values())
        return 1000 * (cpu_s(pid) - before) / (time.monotonic() - started)
    finally:
        sending.cancel()
        await producer.stop()
        await consumer.stop()


async def small_batches(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with EmbeddedBroker(log_file=tmp / "small-batches.log") as broker:
        assert broker.pid is not None
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        await admin.close()
        await asyncio.sleep(1)
        result: dict[str, Any] = {"experiment": "small-batches", "batches": args.batches,
                                  "rss_start_mb": round(rss_mb(broker.pid), 1),
                                  "poll_cpu_ms_per_s_empty": round(await poll_cost(broker.bootstrap, broker.pid, 10), 1)}
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
        await producer.start()
        value = b"y" * 200
        try:
            for i in range(0, args.batches, PARTITIONS):  # one record per partition in flight: one batch each
                await asyncio.gather(*[await producer.send(TOPIC, value, partition=p) for p in range(PARTITIONS)])
        finally:
            await producer.stop()
        await asyncio.sleep(2)
        result["rss_written_mb"] = round(rss_mb(broker.pid), 1)
        result["bytes_per_batch"] = round((result["rss_written_mb"] - result["rss_start_mb"]) * 1024 * 1024
                                          / args.batches)
        result["poll_cpu_ms_per_s_held"] = round(await poll_cost(broker.bootstrap, broker.pid, 10), 1)
        result["offsets"] = await offsets(broker.bootstrap)
    return result


async def recreate_live(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n = 2000
    with EmbeddedBroker(log_file=tmp / "recreate-live.log") as broker:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        result: dict[str, Any] = {"experiment": "recreate-live", "records_per_round": n}
        await write(broker.bootstrap, n * 0.1 / 1024, 0.1)
        consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=broker.bootstrap, group_id="live",
                                    enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                    session_timeout_ms=10000, heartbeat_interval_ms=3000)
        await consumer.start()

        async def drain(c: AIOKafkaConsumer, idle_ms: int = 5000) -> int:
            seen = 0
            while batches := await c.getmany(timeout_ms=idle_ms):
                seen += sum(len(r) for r in batches.values())
                await c.commit()
            return seen

        try:
            result["first_round_read"] = await drain(consumer, idle_ms=15000)
            result["delete"] = str(await admin.delete_topics([TOPIC]))[:120]
            await asyncio.sleep(1)
            await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
            await asyncio.sleep(1)
            await write(broker.bootstrap, n * 0.1 / 1024, 0.1)
            result["second_round_read_by_running_consumer"] = await drain(consumer, idle_ms=10000)
        finally:
            await consumer.stop()
        fresh = AIOKafkaConsumer(TOPIC, bootstrap_servers=broker.bootstrap, group_id="live",
                                 enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50)
        await fresh.start()
        try:
            result["second_round_read_by_group_after_restart"] = await drain(fresh, idle_ms=15000)
        finally:
            await fresh.stop()
        await admin.close()
    return result


async def experiment(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    if name == "small-batches":
        return await small_batches(args, tmp)
    if name == "recreate-live":
        return await recreate_live(args, tmp)
    with EmbeddedBroker(log_file=tmp / f"{name}.log") as broker:
        assert broker.pid is not None
        pid = broker.pid
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
        await admin.start()
        result: dict[str, Any] = {"experiment": name, "mb": args.mb, "value_kb": args.value_kb}
        try:
            configs = dict(RETENTION) if name == "retention-create" else {}
            if name == "compact":
                configs = {"cleanup.policy": "compact", "segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01",
                           "delete.retention.ms": "1000"}
            await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1, topic_configs=configs)])
            await asyncio.sleep(1)
            result["rss_start_mb"] = round(rss_mb(pid), 1)
            counts = await write(broker.bootstrap, args.mb, args.value_kb,
                                 distinct_keys=int(args.mb * 1024 / args.value_kb / 20) if name == "compact" else None)
            result["records"] = sum(counts.values())
            await asyncio.sleep(2)
            result["rss_written_mb"] = round(rss_mb(pid), 1)
            result["offsets_written"] = await offsets(broker.bootstrap)
            if name == "retention-alter":
                try:
                    response = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC, RETENTION)])
                    result["alter_configs"] = str(response)[:300]
                except Exception as exc:  # noqa: BLE001 - the finding
                    result["alter_configs"] = repr(exc)
                try:
                    response = await admin._send_request(IncrementalAlterConfigsRequest(TOPIC, RETENTION))
                    result["incremental_alter_configs"] = str(response)[:300]
                except Exception as exc:  # noqa: BLE001 - the finding
                    result["incremental_alter_configs"] = repr(exc)
            if name in ("delete-records", "delete-half"):
                upto = {p: n if name == "delete-records" else n // 2 for p, n in counts.items()}
                try:
                    low = await admin.delete_records({TopicPartition(TOPIC, p): RecordsToDelete(o)
                                                      for p, o in upto.items()}, timeout_ms=30000)
                    result["delete_records"] = {"asked": upto, "low_watermarks": {tp.partition: o
                                                                                    for tp, o in low.items()}}
                except Exception as exc:  # noqa: BLE001 - the finding
                    result["delete_records"] = {"asked": upto, "error": repr(exc)}
            if name == "delete-topic":
                result["delete_topic"] = str(await admin.delete_topics([TOPIC]))[:200]
            result["configs"] = await describe(admin) if name != "delete-topic" else None
            samples = []
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < args.wait_s:
                await asyncio.sleep(min(10, args.wait_s - elapsed))
                samples.append((round(time.monotonic() - started), round(rss_mb(pid), 1)))
            result["rss_after_wait_mb"] = samples
            if name != "delete-topic":
                result["offsets_after"] = await offsets(broker.bootstrap)
                count, first = await readable(broker.bootstrap)
                result["readable_records"], result["first_readable_offset"] = count, first
            # A second round of the same size: is the memory reused (RSS flat) even if not given back?
            if args.second_round and name != "delete-topic":
                await write(broker.bootstrap, args.mb, args.value_kb)
                await asyncio.sleep(2)
                result["rss_second_round_mb"] = round(rss_mb(pid), 1)
        finally:
            await admin.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    parser.add_argument("--mb", type=float, default=200)
    parser.add_argument("--value-kb", type=float, default=10)
    parser.add_argument("--wait-s", type=float, default=60)
    parser.add_argument("--second-round", action="store_true", help="then write as much again: is memory reused?")
    parser.add_argument("--batches", type=int, default=50_000, help="small-batches: how many")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the brokers' logs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logs = args.log_dir or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        for name in args.experiments:
            result = asyncio.run(experiment(name, args, logs))
            if "rss_after_wait_mb" in result:
                print(f"{name:>17}: RSS {result['rss_start_mb']} -> {result['rss_written_mb']} MB written "
                      f"({result['records']} records) -> {result['rss_after_wait_mb'][-1][1]} MB after "
                      f"{args.wait_s:g} s; readable {result.get('readable_records')}", flush=True)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
