"""Create the pipeline's topics (idempotent)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline import topics
from pipeline.errors import BrokerError
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def topic_configs(name: str, retention_hours: float | None) -> dict[str, str]:
    """Per-topic configs: compaction where the latest value per key is the state, retention elsewhere
    (dead letters kept four times as long, for investigation). A topic's own retention in `topics.CONFIGS` wins."""
    configs = dict(topics.CONFIGS.get(name, {}))
    if retention_hours is not None and configs.get("cleanup.policy") != "compact" and "retention.ms" not in configs:
        hours = retention_hours * (4 if name == topics.DEAD_LETTERS else 1)
        configs["retention.ms"] = str(int(hours * 3600 * 1000))
    return configs


async def ensure_topics(bootstrap: str, partitions: int, timeout_s: float = 30.0, *, replication_factor: int = 1,
                        retention_hours: float | None = None, client_options: dict[str, Any] | None = None
                        ) -> list[str]:
    """Create the missing topics; returns their names. Existing topics are left as they are."""
    admin = await _admin(bootstrap, timeout_s, client_options)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in (*topics.ALL, *topics.FIXED_PARTITIONS) if t not in existing]
        for name in missing:
            try:
                await admin.create_topics([NewTopic(name, num_partitions=topics.FIXED_PARTITIONS.get(name, partitions),
                                                      replication_factor=replication_factor,
                                                      topic_configs=topic_configs(name, retention_hours))])
            except TopicAlreadyExistsError:
                pass
        if missing:
            log.info("created topics: %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()


async def ensure_topics_for(settings: Settings, bootstrap: str) -> list[str]:
    """`ensure_topics` with the settings' partitions, replication, retention and Kafka security."""
    from pipeline.kafka_security import aiokafka_options

    return await ensure_topics(bootstrap, settings.topic_partitions,
                               replication_factor=settings.topic_replication_factor,
                               retention_hours=settings.topic_retention_hours,
                               client_options=aiokafka_options(settings))


async def topic_partitions(bootstrap: str, timeout_s: float = 30.0,
                           client_options: dict[str, Any] | None = None) -> dict[str, int]:
    """The partition count of each pipeline topic that exists (from metadata, not offsets)."""
    admin = await _admin(bootstrap, timeout_s, client_options)
    try:
        described = await admin.describe_topics([t for t in topics.ALL if t in set(await admin.list_topics())])
        return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}
    finally:
        await admin.close()


async def _admin(bootstrap: str, timeout_s: float, client_options: dict[str, Any] | None) -> AIOKafkaAdminClient:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **(client_options or {}))
        try:
            await admin.start()
            return admin
        except KafkaError as exc:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
            await asyncio.sleep(0.2)
