"""Rules as code: which traces each scorer sees, how many, and when to alert."""

from pipeline.rules.loader import apply_overrides, load_rules, parse_rules
from pipeline.rules.model import AlertCondition, AlertRule, EvalRule, RuleFilter, RuleSet, RuleSubject

__all__ = [
    "AlertCondition",
    "AlertRule",
    "EvalRule",
    "RuleFilter",
    "RuleSet",
    "RuleSubject",
    "apply_overrides",
    "load_rules",
    "parse_rules",
]
