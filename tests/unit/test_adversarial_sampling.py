"""Sampling under adversarial conditions: 100k trace ids, several rates, other processes and hash seeds,
and any split of the ids across workers. `is_sampled` is pure, so the sampled set is a property of the
ids alone; these tests show it (test_sampling.py has the basics on 20k ids).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.sampling import is_sampled, sample_point

ROOT = Path(__file__).resolve().parents[2]
N = 100_000
RATES = (0.01, 0.1, 0.5, 0.9)
RULE = "slow-answers"
# Sequential ids (adjacent values differ by one bit) and random W3C-style ids: a weak hash would show a
# bias on the first kind.
SEQUENTIAL = [f"{i:032x}" for i in range(N)]
RANDOM = [f"{random.Random(7).getrandbits(128) ^ i * 0x9E3779B97F4A7C15:032x}" for i in range(N)]


def sampled(ids: list[str], rate: float, rule: str = RULE) -> list[str]:
    return [t for t in ids if is_sampled(t, rule, rate)]


def digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("ids", [SEQUENTIAL, RANDOM], ids=["sequential", "random"])
def test_sampled_fraction_is_within_one_percent_of_the_rate(ids: list[str], rate: float) -> None:
    fraction = len(sampled(ids, rate)) / N
    assert abs(fraction - rate) <= 0.01
    # and within 5 standard deviations, which is tighter than 1 point for every rate here
    assert abs(fraction - rate) <= 5 * math.sqrt(rate * (1 - rate) / N), fraction


def test_reruns_sample_the_same_traces() -> None:
    first = {rate: sampled(SEQUENTIAL, rate) for rate in RATES}
    points = [sample_point(t, RULE) for t in SEQUENTIAL[:1000]]
    again = {rate: sampled(SEQUENTIAL, rate) for rate in RATES}
    assert first == again
    assert points == [sample_point(t, RULE) for t in SEQUENTIAL[:1000]]


_WORKER = """
import json, sys
from pipeline.sampling import is_sampled
ids, rates, rule = json.load(sys.stdin)
print(json.dumps({str(r): [t for t in ids if is_sampled(t, rule, r)] for r in rates}))
"""


def run_worker(ids: list[str], seed: str) -> dict[float, list[str]]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", _WORKER], input=json.dumps([ids, RATES, RULE]),
                         capture_output=True, text=True, env=env, cwd=ROOT, check=True, timeout=120)
    return {float(rate): chosen for rate, chosen in json.loads(out.stdout).items()}


def test_three_worker_processes_with_other_hash_seeds_sample_the_same_set() -> None:
    """Split 100k ids across three processes (each with its own PYTHONHASHSEED, unlike this one): the
    union of what they sample is exactly what one process samples."""
    workers = [run_worker(SEQUENTIAL[w::3], seed) for w, seed in enumerate(("0", "1", "4242"))]
    for rate in RATES:
        union = [t for worker in workers for t in worker[rate]]
        here = sampled(SEQUENTIAL, rate)
        assert len(union) == len(set(union)) == len(here)
        assert digest(union) == digest(here)


_EXPECTED = {rate: set(sampled(RANDOM[:200], rate)) for rate in RATES}


@given(st.integers(1, 16), st.sampled_from(RATES), st.integers(0, 2**32))
def test_any_split_across_workers_and_any_order_gives_the_same_set(count: int, rate: float, seed: int) -> None:
    rng = random.Random(seed)
    ids = RANDOM[:200]
    workers: dict[int, list[str]] = {}
    for trace_id in ids:
        workers.setdefault(rng.randrange(count), []).append(trace_id)
    union: set[str] = set()
    for worker_ids in workers.values():
        rng.shuffle(worker_ids)  # each worker sees its traces in its own order
        is_sampled(rng.choice(SEQUENTIAL), "other-rule", rng.random())  # unrelated calls in between
        union |= {t for t in worker_ids if is_sampled(t, RULE, rate)}
    assert union == _EXPECTED[rate]


def test_rules_with_similar_names_each_get_their_rate() -> None:
    """`rule-1` .. `rule-4` sample different traces, each at its own rate."""
    chosen = {f"rule-{i}": set(sampled(RANDOM, 0.1, f"rule-{i}")) for i in range(1, 5)}
    for rule, traces in chosen.items():
        assert abs(len(traces) / N - 0.1) <= 0.005, rule
    overlap = len(chosen["rule-1"] & chosen["rule-2"]) / N
    assert abs(overlap - 0.01) <= 0.002  # independent: 0.1 * 0.1, not 0.1
