"""Rules versions (content hash), the records on the rules topic, and what a worker does with a bad one."""

from __future__ import annotations

import orjson
import pytest

from pipeline.contracts import Trace, encode
from pipeline.routing import route_trace
from pipeline.rules import parse_rules
from pipeline.rules.store import Raw, RulesFollower, history, latest_valid
from pipeline.rules.versions import (
    RULES_MAX_BYTES,
    ActiveRules,
    RejectedRulesError,
    accept,
    content_version,
    make_record,
    rules_version,
)
from scorers.testing import resolver

BASE = {"rules": [{"name": "errors", "scorer": "error_spans", "sampling_rate": 0.5, "filter": {"project": "shop"}}]}


def ruleset(rate: float = 0.5, **rule):
    return parse_rules({"rules": [{**BASE["rules"][0], "sampling_rate": rate, **rule}]})


def raw(record, offset: int = 0, key: bytes | None = None) -> Raw:
    return Raw(offset, record.version.encode() if key is None else key, encode(record))


def test_a_version_is_12_hex_of_the_rules_content_whatever_their_spelling() -> None:
    version = rules_version(ruleset())
    assert len(version) == 12 and int(version, 16) >= 0
    same = parse_rules({"rules": [{"filter": {"project": ["shop"]}, "sampling_rate": 0.5, "scorer": "error_spans",
                                   "name": "errors", "enabled": True}]})  # other order, defaults spelled out
    assert rules_version(same) == version
    assert rules_version(ruleset(0.25)) != version
    assert rules_version(ruleset(filter={"project": "other"})) != version
    assert ActiveRules.of(parse_rules({})).version == rules_version(parse_rules({}))


def test_a_record_says_who_applied_what_and_round_trips() -> None:
    record = make_record(ruleset(), "rules.yaml (rules apply)", now_ns=1_700_000_000_000_000_000)
    assert record.version == rules_version(ruleset()) == content_version(record.rules)
    assert record.rule_count == 1 and record.alert_count == 0 and record.host and record.user
    active = accept(record.version.encode(), encode(record), scorers=resolver())
    assert active.version == record.version and active.ruleset == ruleset() and active.record == record


def _tampered(record) -> bytes:
    data = orjson.loads(encode(record))
    data["rules"]["rules"][0]["sampling_rate"] = 1.0  # the content changed, the claimed version did not
    return orjson.dumps(data)


@pytest.mark.parametrize("case, reason", [
    ("tombstone", "tombstone"), ("too_large", "too_large"), ("garbage", "undecodable"), ("no_version", "undecodable"),
    ("tampered", "bad_version"), ("other_key", "bad_key"), ("bad_shape", "invalid"), ("unknown_scorer", "invalid"),
])
def test_a_record_that_does_not_validate_is_refused_with_its_reason(case: str, reason: str) -> None:
    good = make_record(ruleset(), "x")
    key = good.version.encode()

    def forged(data: dict) -> bytes:
        return encode(make_record(parse_rules({}), "x").model_copy(update={"rules": data,
                                                                           "version": content_version(data)}))

    value = {
        "tombstone": None,
        "too_large": b"{" + b" " * RULES_MAX_BYTES + b"}",
        "garbage": b"not json",
        "no_version": orjson.dumps({"v": 1, "rules": {}}),
        "tampered": _tampered(good),
        "other_key": encode(good),
        "bad_shape": forged({"rules": [{"name": "x", "scorer": "error_spans", "sampling_rate": 7}]}),
        "unknown_scorer": forged({"rules": [{"name": "x", "scorer": "no-such-scorer"}]}),
    }[case]
    if case == "other_key":
        key = b"current"
    if case in ("bad_shape", "unknown_scorer"):
        key = orjson.loads(value)["version"].encode()
    with pytest.raises(RejectedRulesError) as caught:
        accept(key, value, scorers=resolver())
    assert caught.value.reason == reason


def test_the_current_version_is_the_last_record_that_validates() -> None:
    first, second = make_record(ruleset(0.5), "a"), make_record(ruleset(0.25), "b")
    bad = Raw(2, second.version.encode(), _tampered(second))
    rejected: list[str] = []
    current = latest_valid([raw(first, 0), raw(second, 1), bad], resolver(), lambda r, exc: rejected.append(exc.reason))
    assert current is not None and current.version == second.version and rejected == ["bad_version"]
    assert latest_valid([]) is None


def test_history_lists_each_version_once_at_its_latest_application_and_marks_the_current_one() -> None:
    a1 = make_record(ruleset(0.5), "a", now_ns=1)
    b = make_record(ruleset(0.25), "b", now_ns=2)
    a2 = make_record(ruleset(0.5), "a again", now_ns=3)
    listed = history([raw(a1, 0), raw(b, 1), Raw(2, b"junk", b"junk"), raw(a2, 3)])
    assert [(r.version, r.source, current) for r, current in listed] == [(b.version, "b", False),
                                                                         (a1.version, "a again", True)]


def test_the_follower_switches_to_a_valid_new_version_and_keeps_its_rules_on_a_bad_one() -> None:
    first, second = make_record(ruleset(0.5), "a"), make_record(ruleset(0.25), "b")
    state = {"rules": accept(first.version.encode(), encode(first))}
    rejected: list[str] = []
    switched: list[str] = []

    def change(active: ActiveRules) -> None:
        switched.append(active.version)
        state["rules"] = active

    follower = RulesFollower("unused:9092", lambda: state["rules"].version, change, scorers=resolver(),
                             on_reject=rejected.append)
    follower.take(Raw(1, second.version.encode(), _tampered(second)))  # forged: the rules in use stay
    follower.take(Raw(2, b"x", None))
    assert state["rules"].version == first.version and rejected == ["bad_version", "tombstone"] and not switched
    follower.take(raw(first, 3))  # the version in use again: no switch
    follower.take(raw(second, 4))
    assert switched == [second.version] and state["rules"].ruleset.rules[0].sampling_rate == 0.25


def test_routing_records_the_version_on_every_decision_and_job() -> None:
    trace = Trace.model_validate({"trace_id": "t1", "version": 1, "project": "shop", "status": "complete", "close_reason": "final_marker",
                                  "spans": [{"trace_id": "t1", "span_id": "s1", "name": "root", "start_ns": 1,
                                             "end_ns": 2}]})
    routed = route_trace(trace, ruleset(1.0), resolver(), rules_version="0123456789ab")
    assert routed.jobs and {j.rules_version for j in routed.jobs} == {"0123456789ab"}
    assert routed.decisions and {d.rules_version for d in routed.decisions} == {"0123456789ab"}
