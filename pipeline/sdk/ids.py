"""Trace and span ids: random by default (the `random` module reseeds itself after fork); the test
kit swaps in sequential ones."""

from __future__ import annotations

import functools
import random
from typing import Protocol

_bits = random.getrandbits


class IdGenerator(Protocol):
    def trace_id(self) -> int: ...
    def span_id(self) -> int: ...


class RandomIds:
    # Bound straight to getrandbits: a zero id has probability 2**-64 and is tolerated downstream.
    trace_id = staticmethod(functools.partial(_bits, 128))
    span_id = staticmethod(functools.partial(_bits, 64))


def random_hex(nbytes: int) -> str:
    return f"{_bits(nbytes * 8):0{nbytes * 2}x}"
