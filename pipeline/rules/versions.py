"""Versions of the rules, for rules applied without a restart (`evalstream rules apply`). Pure.

A version is the first 12 hex digits of the sha256 of the RuleSet's canonical JSON (sorted keys, no
spaces), so the same rules give the same version from any file, host or key order. `ActiveRules` pairs a
RuleSet with its version: routing reads one reference per event, so a switch never splits an event.

A record read from `evalstream.rules.v1` is untrusted: `accept` re-checks its size, shape, version (the
hash of what it carries, and the key it came under) and rules, as `rules check` does, before it is used.
"""

from __future__ import annotations

import getpass
import hashlib
import socket
import time
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.contracts import decode, encode
from pipeline.contracts.rules import RulesRecord
from pipeline.errors import DecodeError, RulesError
from pipeline.rules.loader import ScorerCheck, parse_rules
from pipeline.rules.model import RuleSet

RULES_MAX_BYTES = 1024 * 1024  # a rules record, published or read
VERSION_HEX = 12


def canonical_json(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def content_version(data: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(data)).hexdigest()[:VERSION_HEX]


def rules_data(ruleset: RuleSet) -> dict[str, Any]:
    """The RuleSet as the JSON a record carries (defaults filled in)."""
    return ruleset.model_dump(mode="json")


def rules_version(ruleset: RuleSet) -> str:
    return content_version(rules_data(ruleset))


@dataclass(frozen=True)
class ActiveRules:
    """The rules a worker routes with, and their version ('' for no rules at all). Replaced whole."""

    ruleset: RuleSet
    version: str = ""
    record: RulesRecord | None = None  # where they came from, when they came from the topic or were put there

    @staticmethod
    def of(ruleset: RuleSet) -> ActiveRules:
        return ActiveRules(ruleset, rules_version(ruleset))

    @property
    def label(self) -> str:
        if self.record is None:
            return self.version or "(none)"
        r = self.record
        return f"{self.version} ({r.rule_count} rule(s), applied by {r.user or '?'}@{r.host or '?'} from {r.source or '?'})"


def make_record(ruleset: RuleSet, source: str, *, now_ns: int | None = None) -> RulesRecord:
    data = rules_data(ruleset)
    return RulesRecord(version=content_version(data), rules=data,
                       applied_at_ns=time.time_ns() if now_ns is None else now_ns,
                       host=socket.gethostname()[:255], user=_user()[:255], source=source[:1024],
                       rule_count=len(ruleset.rules), alert_count=len(ruleset.alerts))


def encode_record(record: RulesRecord) -> bytes:
    value = encode(record)
    if len(value) > RULES_MAX_BYTES:
        raise RulesError(f"the rules make a {len(value)}-byte record, over the {RULES_MAX_BYTES}-byte limit")
    return value


class RejectedRulesError(RulesError):
    """A record on the rules topic that is not used; `reason` is a short code for the counter."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def accept(key: bytes | None, value: bytes | None, *, scorers: ScorerCheck | None = None) -> ActiveRules:
    """The rules of one record, checked as `rules check` checks a file (the scorers too, when given), or
    RejectedRulesError saying why not."""
    if value is None:
        raise RejectedRulesError(f"a tombstone (key {key!r}) carries no rules", "tombstone")
    if len(value) > RULES_MAX_BYTES:
        raise RejectedRulesError(f"a {len(value)}-byte record, over the {RULES_MAX_BYTES}-byte limit", "too_large")
    try:
        record = decode(value, RulesRecord, max_bytes=RULES_MAX_BYTES)
    except DecodeError as exc:
        raise RejectedRulesError(f"not a rules record: {exc}", "undecodable") from None
    actual = content_version(record.rules)
    if actual != record.version:
        raise RejectedRulesError(f"claims version {record.version}, but its rules hash to {actual}", "bad_version")
    if key is not None and key != record.version.encode():
        raise RejectedRulesError(f"version {record.version} under key {key!r}", "bad_key")
    try:
        ruleset = parse_rules(record.rules, source=f"rules version {record.version}", scorers=scorers)
    except RulesError as exc:
        raise RejectedRulesError(str(exc), "invalid") from None
    return ActiveRules(ruleset, record.version, record)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "?"
