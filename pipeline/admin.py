"""Create the pipeline's topics (idempotent)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline import topics
from pipeline.errors import BrokerError

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, partitions: int, timeout_s: float = 30.0) -> list[str]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            break
        except KafkaError as exc:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
            await asyncio.sleep(0.2)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics.ALL if t not in existing]
        for name in missing:
            try:
                await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                                      topic_configs=topics.CONFIGS.get(name, {}))])
            except TopicAlreadyExistsError:
                pass
        if missing:
            log.info("created topics: %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()
