"""Deterministic sampling: the same (trace, rule) always gets the same decision, and the same
(trace, span, rule) for a span rule (`span_key`).

The SDK's `async_evaluate` and the pipeline's rules both use `is_sampled`, so reruns,
any number of workers and client-side sampling agree.
"""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 64)
SDK_RULE_PREFIX = "sdk:"


def sdk_rule(scorer: str) -> str:
    """The rule name an `async_evaluate` request is sampled and recorded under."""
    return f"{SDK_RULE_PREFIX}{scorer}"


def sample_point(trace_id: str, rule: str) -> float:
    """A uniform point in [0, 1) fixed by the trace id and the rule name."""
    digest = hashlib.blake2b(f"{rule}\x00{trace_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def span_key(trace_id: str, span_id: str) -> str:
    """What a span rule samples by in place of the trace id: (rule, trace id, span id) fixes the point."""
    return f"{trace_id}\x00{span_id}"


def is_sampled(trace_id: str, rule: str, rate: float) -> bool:
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return sample_point(trace_id, rule) < rate
