"""Rules as code: which traces each scorer sees, how many, and when to alert."""

from pipeline.rules.loader import ScorerCheck, apply_overrides, check_scorers, load_rules, parse_rules
from pipeline.rules.model import AlertCondition, AlertRule, EvalRule, RuleFilter, RuleSet, RuleSubject

__all__ = [
    "AlertCondition",
    "AlertRule",
    "EvalRule",
    "RuleFilter",
    "RuleSet",
    "RuleSubject",
    "ScorerCheck",
    "apply_overrides",
    "check_scorers",
    "load_rules",
    "parse_rules",
]
