"""What a backfill covers (rules, time window, project, limit) and its identity, which names its checkpoint."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import orjson

from pipeline.errors import ConfigError
from pipeline.rules.model import RuleSet
from pipeline.storage.filters import parse_time


@dataclass(frozen=True)
class BackfillSpec:
    """The command's arguments as given: `since="7d"` stays "7d", so re-running the same command tomorrow
    finds the same checkpoint; the absolute window is fixed once, on the first run, and kept there."""

    rules: tuple[str, ...]
    since: str
    until: str | None = None
    project: str | None = None
    limit: int | None = None

    @classmethod
    def of(cls, rules: list[str], since: str, until: str | None = None, project: str | None = None,
           limit: int | None = None) -> BackfillSpec:
        names = tuple(sorted({r.strip() for r in rules if r.strip()}))
        if not names:
            raise ConfigError("name at least one rule: --rule NAME")
        if limit is not None and limit < 1:
            raise ConfigError("--limit must be at least 1")
        return cls(names, since.strip(), until.strip() if until else None, project or None, limit)

    @property
    def identity(self) -> str:
        raw = orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(raw, digest_size=8).hexdigest()

    def window_us(self, now: float) -> tuple[int, int]:
        """[since, until) in epoch microseconds; `until` defaults to now, so traces closing while the
        backfill runs are left to the live pipeline."""
        try:
            since = parse_time(self.since, now)
            until = parse_time(self.until, now) if self.until else now
        except ValueError as exc:
            raise ConfigError(f"--since / --until: {exc}") from None
        if since >= until:
            raise ConfigError(f"--since {self.since} is not before --until {self.until or 'now'}")
        return int(since * 1_000_000), int(until * 1_000_000)

    def describe(self) -> str:
        parts = [f"rule{'s' if len(self.rules) > 1 else ''} {', '.join(self.rules)}", f"since {self.since}"]
        if self.until:
            parts.append(f"until {self.until}")
        if self.project:
            parts.append(f"project {self.project}")
        if self.limit:
            parts.append(f"at most {self.limit} traces")
        return "; ".join(parts)


def check_rules(ruleset: RuleSet, names: tuple[str, ...], source: str) -> None:
    """Every name must be an active trace or span rule of the rules file the workers run (sessions are not
    backfilled)."""
    active = [r.name for r in ruleset.trace_and_span_rules]
    unknown = [n for n in names if n not in active]
    if not unknown:
        return
    disabled = [n for n in unknown if ruleset.rule(n) is not None]
    note = f" ({', '.join(disabled)} {'is' if len(disabled) == 1 else 'are'} disabled)" if disabled else ""
    raise ConfigError(f"unknown rule{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{note}; "
                      f"active rules in {source}: {', '.join(active) or '(none)'}")
