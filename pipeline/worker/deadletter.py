"""Turn a failure while handling a message into a DeadLetter record."""

from __future__ import annotations

import time
from typing import Any

from pipeline.contracts import DeadLetter


def dead_letter_for(stage: str, message: Any, exc: BaseException, *, trace_id: str | None = None,
                    job_id: str | None = None, item: str | None = None) -> DeadLetter:
    raw = message.value if isinstance(message.value, bytes | bytearray) else b""
    key = message.key.decode(errors="replace") if isinstance(message.key, bytes | bytearray) else None
    return DeadLetter(
        stage=stage, source_topic=message.topic, partition=message.partition, offset=message.offset, key=key,
        error_type=type(exc).__name__, reason=str(exc)[:2000], payload_size=len(raw),
        payload_excerpt=bytes(raw[:4096]).decode(errors="replace"), trace_id=trace_id, job_id=job_id, item=item,
        at_ns=time.time_ns(),
    )
