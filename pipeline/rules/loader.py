"""Load, override and check a rules file. Every error names the rule and the field.

The scorers a rules file names are checked by the `ScorerCheck` the caller hands in (the process's
`ScorerResolver`, which knows its uploaded scorers and its judges' configuration); without one, only
the file's shape is checked.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from pipeline.errors import RulesError, ScorerError
from pipeline.rules.model import RuleSet, RuleSubject


class ScorerCheck(Protocol):
    """What checking the scorers takes (a `scorers.registry.ScorerResolver` is one)."""

    def build(self, ref: str, params: dict[str, Any]) -> object:
        """Build scorer `ref` with `params`: ScorerError when it is unknown, TypeError / ValueError on a bad param."""

    def param_names(self, ref: str) -> set[str]:
        """The params scorer `ref` declares (ScorerError when it is unknown)."""


def load_rules(path: str | Path, overrides: list[str] | None = None, *, scorers: ScorerCheck | None = None
               ) -> RuleSet:
    path = Path(path)
    if not path.is_file():
        raise RulesError(f"rules file {path} does not exist")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from None
    return parse_rules(data or {}, source=str(path), overrides=overrides, scorers=scorers)


def parse_rules(data: Any, *, source: str = "<rules>", overrides: list[str] | None = None,
                scorers: ScorerCheck | None = None) -> RuleSet:
    if not isinstance(data, dict):
        raise RulesError(f"{source}: expected a mapping with 'rules' and 'alerts'")
    if overrides:
        data = apply_overrides(data, overrides, source=source)
    try:
        ruleset = RuleSet.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, data, source) from None
    if scorers is not None:
        check_scorers(ruleset, scorers, source)
    return ruleset


def apply_overrides(data: dict[str, Any], overrides: list[str], *, source: str) -> dict[str, Any]:
    """`RULE.FIELD=VALUE` (VALUE parsed as YAML), e.g. `slow.sampling_rate=0.1` or `slow.enabled=false`."""
    rules = data.get("rules") or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise RulesError(f"{source}: 'rules' must be a list of mappings")
    data = {**data, "rules": [dict(r) for r in rules]}
    by_name = {r.get("name"): r for r in data["rules"]}
    for item in overrides:
        target, sep, raw = item.partition("=")
        rule_name, dot, field = target.rpartition(".")
        if not sep or not dot or not rule_name or not field:
            raise RulesError(f"override {item!r}: expected RULE.FIELD=VALUE")
        if rule_name not in by_name:
            raise RulesError(f"override {item!r}: no rule named {rule_name!r} in {source}", rule=rule_name)
        by_name[rule_name][field] = yaml.safe_load(raw)
    return data


def _explain(exc: ValidationError, data: dict[str, Any], source: str) -> RulesError:
    err = exc.errors()[0]
    loc = list(err["loc"])
    rule = field = None
    if len(loc) >= 2 and loc[0] in ("rules", "alerts") and isinstance(loc[1], int):
        items = data.get(loc[0]) or []
        entry = items[loc[1]] if loc[1] < len(items) and isinstance(items[loc[1]], dict) else {}
        kind = "rule" if loc[0] == "rules" else "alert"
        rule = str(entry.get("name", f"#{loc[1] + 1}"))
        field = ".".join(str(p) for p in loc[2:]) or None
        where = f"{kind} {rule!r}" + (f" field {field!r}" if field else "")
    else:
        where = ".".join(str(p) for p in loc) or "top level"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return RulesError(f"{source}: {where}: {err['msg']}{more}", rule=rule, field=field)


def check_scorers(ruleset: RuleSet, scorers: ScorerCheck, source: str = "<rules>") -> None:
    """Build each rule's scorer once, so an unknown scorer or bad param fails at start, not per trace; a
    span rule's scorer must declare that it scores spans (`Scorer.subjects`)."""
    for rule in ruleset.rules:
        try:
            built = scorers.build(rule.scorer, rule.params)
        except ScorerError as exc:
            raise RulesError(f"{source}: rule {rule.name!r} field 'scorer': {exc}", rule=rule.name,
                             field="scorer") from None
        except (TypeError, ValueError) as exc:
            raise RulesError(f"{source}: rule {rule.name!r} field 'params': {exc}", rule=rule.name,
                             field="params") from None
        if rule.subject == RuleSubject.SPAN:
            declared = sorted(getattr(built, "subjects", None) or ("trace",))
            if "span" not in declared:
                raise RulesError(
                    f"{source}: rule {rule.name!r} is a span rule (subject: span), but scorer {rule.scorer!r} "
                    f"scores only {', '.join(declared)} (its `subjects`); choose a scorer that declares 'span' "
                    f"or make the rule a trace rule", rule=rule.name, field="scorer")
    _check_sdk_scorers(ruleset, scorers, source)


def _check_sdk_scorers(ruleset: RuleSet, scorers: ScorerCheck, source: str) -> None:
    """A listed scorer must exist, and its fixed params must be ones it declares (the span gives the rest)."""
    for entry in ruleset.sdk_evaluations.scorers:
        where = f"{source}: sdk_evaluations scorer {entry.name!r}"
        try:
            declared = scorers.param_names(entry.ref)
        except ScorerError as exc:
            raise RulesError(f"{where}: {exc}", field="sdk_evaluations") from None
        unknown = sorted(set(entry.params) - declared)
        if unknown:
            raise RulesError(f"{where}: {entry.ref!r} has no params {', '.join(unknown)}", field="sdk_evaluations")
