"""Run real worker processes against a real Tansu broker and chDB, and query what they stored."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline import topics
from pipeline.runfile import read_run_file

FAST_ENV = {
    "EVALSTREAM_QUIET_PERIOD_S": "1",
    "EVALSTREAM_IDLE_TIMEOUT_S": "4",
    "EVALSTREAM_TICK_INTERVAL_S": "0.2",
    "EVALSTREAM_SINK_FLUSH_INTERVAL_S": "0.2",
    "EVALSTREAM_TOPIC_PARTITIONS": "4",
    "EVALSTREAM_LOG_LEVEL": "info",
}


class WorkerProcess:
    def __init__(self, data_dir: Path, bootstrap: str, rules: Path, extra_env: dict[str, str] | None = None,
                 *, beside: bool = False) -> None:
        """`beside`: another worker in a data dir whose run.json a running worker wrote (as `evalstream worker`
        next to `up`): the file is kept, and the log goes to a file of its own."""
        self.data_dir = data_dir
        self.beside = beside
        sink = {**os.environ, **(extra_env or {})}.get("EVALSTREAM_SINK_ENABLED", "true").lower()
        assert not beside or sink in ("false", "0", "no"), "a worker beside another must not run the sink too"
        self.env = {**os.environ, **FAST_ENV, "EVALSTREAM_DATA_DIR": str(data_dir),
                    "EVALSTREAM_KAFKA_BOOTSTRAP": bootstrap, **(extra_env or {})}
        self.rules = rules
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir / (f"worker-{id(self):x}.log" if beside else "worker.log")
        self.query_url: str | None = None

    def start(self, timeout_s: float = 90) -> WorkerProcess:
        """Start it and wait for its query endpoint; a worker without the sink has none, so it is only started.
        A worker that does not get ready is stopped before the error is raised, so no test leaves one behind."""
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.beside:
            (self.data_dir / "run.json").unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", "--rules", str(self.rules)],
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if self.env.get("EVALSTREAM_SINK_ENABLED", "true").lower() in ("false", "0", "no"):
            return self
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker exited early:\n{self.log_tail()}"
            url = read_run_file(self.data_dir / "run.json").get("query_url")
            if url:
                self.query_url = url
                return self
            time.sleep(0.1)
        raise AssertionError(f"worker not ready in {timeout_s}s:\n{self.log_tail()}")

    def metric(self, name: str) -> float | None:
        """One sample of this worker's /metrics (the first with that name), or None while it has none."""
        if self.process is None:
            return None
        url = (read_run_file(self.data_dir / "run.json").get("metrics_urls") or {}).get(str(self.process.pid))
        if not url:
            return None
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                exposition = response.read().decode()
        except OSError:
            return None
        for line in exposition.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def query(self, sql: str) -> list[list[Any]]:
        request = urllib.request.Request(f"{self.query_url}/query", data=json.dumps({"sql": sql}).encode())
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())["rows"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"query failed ({exc.code}): {exc.read().decode(errors='replace')}\n{sql}") from None

    def scalar(self, sql: str) -> Any:
        return self.query(sql)[0][0]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}\n{self.log_tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def span(trace_id: str, span_id: str, parent: str | None, name: str = "step", *, start_ms: int = 0,
         dur_ms: int = 5, span_type: str = "function", status: str = "ok", project: str = "itest",
         **extra: Any) -> dict[str, Any]:
    start = 1_700_000_000_000_000_000 + start_ms * 1_000_000
    return {"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": name, "span_type": span_type,
            "start_ns": start, "end_ns": start + dur_ms * 1_000_000, "status": status, "project": project, **extra}


def batch(trace_id: str, spans: list[dict[str, Any]], final: bool = False) -> bytes:
    return orjson.dumps({"v": 1, "kind": "spans", "trace_id": trace_id, "spans": spans, "final": final})


def produce(bootstrap: str, messages: list[tuple[bytes, bytes]], topic: str = topics.SPANS) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=16 * 1024 * 1024)
        await producer.start()
        try:
            pending = list(messages)
            for _ in range(3):  # a batch the broker failed is sent again (at least once, as the SDK sends)
                futures = [await producer.send(topic, value, key=key) for key, value in pending]
                await producer.flush()
                results = await asyncio.gather(*futures, return_exceptions=True)
                pending = [m for m, r in zip(pending, results, strict=True) if isinstance(r, BaseException)]
                if not pending:
                    return
            failed = next(r for r in results if isinstance(r, BaseException))
            raise AssertionError(f"{len(pending)} message(s) could not be produced: {failed!r}")
        finally:
            await producer.stop()

    asyncio.run(run())


def read_topic(bootstrap: str, topic: str, idle_s: float = 1.5) -> list[tuple[int, int, bytes]]:
    """Every record of a topic as (partition, offset, value), read from the start until it goes quiet."""
    async def run() -> list[tuple[int, int, bytes]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50)
        await consumer.start()
        out: list[tuple[int, int, bytes]] = []
        try:
            while batches := await consumer.getmany(timeout_ms=int(idle_s * 1000)):
                out += [(r.partition, r.offset, r.value or b"") for records in batches.values() for r in records]
        finally:
            await consumer.stop()
        return out

    return asyncio.run(run())


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The consumer group's committed offset per partition (-1 where it has committed none)."""
    async def run() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            return {p: (await consumer.committed(TopicPartition(topic, p))) or -1 for p in range(partitions)}
        finally:
            await consumer.stop()

    return asyncio.run(run())
