"""RulesRecord: one version of the rules, on `evalstream.rules.v1` keyed by its version (`rules apply`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pipeline.contracts.bounds import TimestampNs
from pipeline.contracts.spans import _Wire


class RulesRecord(_Wire):
    """A parsed rules file (`rules`: the RuleSet as JSON, overrides applied) and who applied it. `version` is
    the first 12 hex digits of the sha256 of `rules` as canonical JSON (`rules/versions.py`), so the same
    rules give the same version wherever they were applied from. Readers check it: the topic is writable
    by producers that are not fully trusted."""

    v: Literal[1] = 1
    version: str = Field(min_length=12, max_length=12, pattern=r"^[0-9a-f]{12}$")
    rules: dict[str, Any]
    applied_at_ns: TimestampNs = 0
    host: str = Field(default="", max_length=255)
    user: str = Field(default="", max_length=255)
    source: str = Field(default="", max_length=1024)  # the file, and how (`rules apply`, `worker --rules`)
    rule_count: int = Field(default=0, ge=0)
    alert_count: int = Field(default=0, ge=0)
