"""pipeline/rules: loading (YAML / TOML), validation messages, --set overrides and filter matching."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline import rules
from pipeline.contracts import Span, Trace
from pipeline.errors import RulesError
from pipeline.rules import AlertCondition, RuleFilter, RuleSet, apply_overrides
from pipeline.rules.matching import filter_mismatch
from scorers import Scorer, scorer
from scorers.testing import resolver

SCORERS = resolver()  # the check a worker hands the loader (without uploads)


def parse_rules(data: Any, **options: Any) -> RuleSet:
    return rules.parse_rules(data, scorers=SCORERS, **options)


def load_rules(path: Path, overrides: list[str] | None = None) -> RuleSet:
    return rules.load_rules(path, overrides, scorers=SCORERS)

YAML_RULES = """
rules:
  - name: slow
    scorer: trace_latency
    params: {max_ms: 1000}
    sampling_rate: 0.5
    threshold: 800
    filter:
      project: support-bot
      span_type: [llm, tool]
      span_name: "search_*"
      attributes: {tenant: acme}
      has_error: false
      min_duration_ms: 10
      min_cost_usd: 0.01
      status: complete
  - name: errors
    scorer: error_spans
    enabled: false
alerts:
  - name: slow-burst
    rule: slow
    condition: failed_or_error
    min_count: 3
    window_s: 30
  - name: everything
"""

TOML_RULES = """
[[rules]]
name = "team.slow"
scorer = "trace_latency"
params = { max_ms = 250 }
sampling_rate = 0.25

[rules.filter]
project = ["a", "b"]

[[rules]]
name = "loops"
scorer = "repeated_tool_calls"
params = { max_repeats = 3 }

[[alerts]]
name = "loop-alert"
rule = "loops"
condition = "error"
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- loading ----------------------------------------------------------------------------------------

def test_valid_yaml_file_loads(tmp_path: Path) -> None:
    rs = load_rules(_write(tmp_path, "rules.yaml", YAML_RULES))
    assert [r.name for r in rs.rules] == ["slow", "errors"]
    assert [r.name for r in rs.active] == ["slow"]
    slow = rs.rule("slow")
    assert slow is not None
    assert slow.scorer == "trace_latency" and slow.params == {"max_ms": 1000}
    assert slow.sampling_rate == 0.5 and slow.threshold == 800
    # a single string becomes a one-element list
    assert slow.filter.project == ["support-bot"] and slow.filter.status == ["complete"]
    assert slow.filter.span_type == ["llm", "tool"]
    assert slow.filter.attributes == {"tenant": "acme"}
    burst, everything = rs.alerts
    assert burst.condition == AlertCondition.FAILED_OR_ERROR and burst.levels.critical == 3
    assert burst.min_count == 3 and burst.window_s == 30 and burst.channel == "default"
    assert everything.rule is None and everything.levels.critical == 1 and everything.condition == "failed"
    assert rs.rule("missing") is None


def test_valid_toml_file_loads(tmp_path: Path) -> None:
    rs = load_rules(_write(tmp_path, "rules.toml", TOML_RULES))
    assert [r.name for r in rs.rules] == ["team.slow", "loops"]
    assert rs.rules[0].filter.project == ["a", "b"]
    assert rs.rules[0].sampling_rate == 0.25
    assert rs.rules[1].params == {"max_repeats": 3}
    assert rs.alerts[0].condition == AlertCondition.ERROR


def test_the_shipped_demo_rules_load() -> None:
    path = Path(__file__).resolve().parents[2] / "pipeline" / "demo" / "rules.yaml"
    rs = load_rules(path)
    assert {r.name for r in rs.trace_rules} == {"slow-traces", "tool-errors", "tool-loops"}
    assert [(r.name, r.each_turn) for r in rs.session_rules] == [("conversation-errors", True)]


def test_empty_yaml_file_is_an_empty_ruleset(tmp_path: Path) -> None:
    rs = load_rules(_write(tmp_path, "rules.yaml", "# nothing yet\n"))
    assert rs.rules == [] and rs.alerts == []


def test_missing_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="does not exist"):
        load_rules(tmp_path / "nope.yaml")


def test_invalid_yaml_syntax_is_a_rules_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules.yaml", "rules:\n  - name: [unclosed\n")
    with pytest.raises(RulesError, match="not valid YAML") as info:
        load_rules(path)
    assert str(path) in str(info.value)


def test_invalid_toml_syntax_is_a_rules_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules.toml", "[[rules]\nname = \n")
    with pytest.raises(RulesError, match="not valid TOML"):
        load_rules(path)


def test_top_level_list_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="expected a mapping"):
        load_rules(_write(tmp_path, "rules.yaml", "- name: slow\n  scorer: trace_latency\n"))


def _rule(**kw: Any) -> dict[str, Any]:
    return {"name": "slow", "scorer": "trace_latency", **kw}


INVALID = {
    "sampling_rate above 1": (
        {"rules": [_rule(sampling_rate=2)]}, "slow", "sampling_rate", ["'slow'", "sampling_rate"]),
    "negative sampling_rate": (
        {"rules": [_rule(sampling_rate=-0.1)]}, "slow", "sampling_rate", ["'slow'", "sampling_rate"]),
    "unknown rule key": (
        {"rules": [_rule(sampling_rat=0.1)]}, "slow", "sampling_rat", ["'slow'", "sampling_rat"]),
    "unknown filter key": (
        {"rules": [_rule(filter={"spanname": "x"})]}, "slow", "filter.spanname", ["'slow'", "filter.spanname"]),
    "negative filter duration": (
        {"rules": [_rule(filter={"min_duration_ms": -1})]}, "slow", "filter.min_duration_ms",
        ["'slow'", "filter.min_duration_ms"]),
    "unknown scorer": (
        {"rules": [_rule(scorer="no_such_scorer")]}, "slow", "scorer",
        ["'slow'", "'scorer'", "no_such_scorer", "trace_latency"]),
    "dotted scorer that does not import": (
        {"rules": [_rule(scorer="no_such_pkg.mod:thing")]}, "slow", "scorer", ["'slow'", "no_such_pkg.mod"]),
    "dotted path to a non-scorer": (
        {"rules": [_rule(scorer="os.path:join")]}, "slow", "scorer", ["'slow'", "'join'"]),
    "bad param value": (
        {"rules": [_rule(params={"max_ms": -1})]}, "slow", "params", ["'slow'", "'params'", "max_ms"]),
    "unknown param": (
        {"rules": [_rule(params={"max_msx": 5})]}, "slow", "params", ["'slow'", "'params'", "max_msx"]),
    "bad rule name": (
        {"rules": [_rule(name="has space")]}, "has space", "name", ["'has space'", "'name'"]),
    "missing scorer": (
        {"rules": [{"name": "slow"}]}, "slow", "scorer", ["'slow'", "'scorer'"]),
    "missing name names the position": (
        {"rules": [_rule(), {"scorer": "error_spans"}]}, "#2", "name", ["'#2'", "'name'"]),
    "bad alert condition": (
        {"rules": [_rule()], "alerts": [{"name": "al", "condition": "sometimes"}]}, "al", "condition",
        ["alert 'al'", "'condition'"]),
    "alert min_count 0": (
        {"rules": [_rule()], "alerts": [{"name": "al", "min_count": 0}]}, "al", "min_count",
        ["alert 'al'", "'min_count'"]),
    "alert window 0": (
        {"rules": [_rule()], "alerts": [{"name": "al", "window_s": 0}]}, "al", "window_s",
        ["alert 'al'", "'window_s'"]),
}


@pytest.mark.parametrize("data, rule, field, fragments", INVALID.values(), ids=INVALID.keys())
def test_invalid_rules_name_the_rule_and_the_field(data: dict, rule: str, field: str,
                                                    fragments: list[str]) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(data, source="rules.yaml")
    message = str(info.value)
    assert message.startswith("rules.yaml: ")
    for fragment in fragments:
        assert fragment in message
    assert info.value.rule == rule
    assert info.value.field == field


def test_duplicate_rule_names_are_rejected() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules({"rules": [_rule(), _rule(scorer="error_spans")]})
    assert "'slow'" in str(info.value) and "twice" in str(info.value)


def test_duplicate_alert_names_are_rejected() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules({"rules": [_rule()], "alerts": [{"name": "al"}, {"name": "al"}]})
    assert "'al'" in str(info.value) and "twice" in str(info.value)


def test_alert_referring_to_unknown_rule_is_rejected() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules({"rules": [_rule()], "alerts": [{"name": "al", "rule": "slwo"}]})
    assert "'al'" in str(info.value) and "'slwo'" in str(info.value)


def test_an_alert_naming_one_channel_is_refused_rather_than_sent_everywhere() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules({"rules": [_rule()], "alerts": [{"name": "al", "channel": "ops"}]})
    assert "'al'" in str(info.value) and "every configured channel" in str(info.value)


def test_unknown_top_level_key_is_rejected() -> None:
    with pytest.raises(RulesError, match="rulez"):
        parse_rules({"rulez": []})


def test_invalid_file_error_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules.yaml", "rules:\n  - name: slow\n    scorer: trace_latency\n    sampling_rate: 2\n")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(path) in str(info.value) and "'slow'" in str(info.value) and "sampling_rate" in str(info.value)


def test_rules_are_frozen() -> None:
    rs = parse_rules({"rules": [_rule()]})
    with pytest.raises(ValidationError, match="frozen"):
        rs.rules[0].sampling_rate = 0.1  # type: ignore[misc]


# -- overrides --------------------------------------------------------------------------------------

BASE = {"rules": [_rule(params={"max_ms": 1000}), {"name": "team.errors", "scorer": "error_spans"}]}


def test_override_sets_a_field() -> None:
    rs = parse_rules(copy.deepcopy(BASE), overrides=["slow.sampling_rate=0.1", "slow.enabled=false",
                                                     "slow.params={max_ms: 50}", "slow.threshold=12.5"])
    slow = rs.rule("slow")
    assert slow.sampling_rate == 0.1 and slow.enabled is False
    assert slow.params == {"max_ms": 50} and slow.threshold == 12.5
    assert [r.name for r in rs.active] == ["team.errors"]


def test_override_works_for_rule_names_with_dots() -> None:
    rs = parse_rules(copy.deepcopy(BASE), overrides=["team.errors.sampling_rate=0.2"])
    assert rs.rule("team.errors").sampling_rate == 0.2
    assert rs.rule("slow").sampling_rate == 1.0


def test_override_does_not_mutate_the_input() -> None:
    data = copy.deepcopy(BASE)
    apply_overrides(data, ["slow.sampling_rate=0.1"], source="x")
    assert data == BASE


def test_override_through_load_rules(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules.yaml", YAML_RULES)
    rs = load_rules(path, overrides=["errors.enabled=true"])
    assert [r.name for r in rs.active] == ["slow", "errors"]


@pytest.mark.parametrize("item", ["slow.sampling_rate", "sampling_rate=0.1", ".sampling_rate=0.1", "slow.=0.1",
                                  "=1", ""])
def test_bad_override_syntax(item: str) -> None:
    with pytest.raises(RulesError, match=r"expected RULE\.FIELD=VALUE"):
        parse_rules(copy.deepcopy(BASE), overrides=[item])


def test_override_of_unknown_rule() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(copy.deepcopy(BASE), overrides=["slwo.enabled=false"])
    assert "no rule named 'slwo'" in str(info.value)
    assert info.value.rule == "slwo"


def test_override_with_invalid_value_names_rule_and_field() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(copy.deepcopy(BASE), overrides=["slow.sampling_rate=2"])
    assert info.value.rule == "slow" and info.value.field == "sampling_rate"


def test_override_of_unknown_field_is_rejected() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(copy.deepcopy(BASE), overrides=["slow.sampling=0.5"])
    assert info.value.rule == "slow" and info.value.field == "sampling"


def test_override_with_bad_params_is_caught_at_load() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(copy.deepcopy(BASE), overrides=["slow.params={max_ms: 0}"])
    assert info.value.rule == "slow" and info.value.field == "params"


def test_override_on_malformed_rules_section_is_a_rules_error() -> None:
    # Without --set this is a clean RulesError; with --set it escapes as a raw ValueError.
    with pytest.raises(RulesError):
        parse_rules({"rules": {"slow": {"scorer": "trace_latency"}}})
    with pytest.raises(RulesError):
        parse_rules({"rules": {"slow": {"scorer": "trace_latency"}}}, overrides=["slow.enabled=false"])


# -- matching ---------------------------------------------------------------------------------------

def _span(span_id: str, name: str, parent: str | None = "root", **kw: Any) -> Span:
    return Span(trace_id="t", span_id=span_id, parent_span_id=parent, name=name,
                start_ns=kw.pop("start_ns", 0), end_ns=kw.pop("end_ns", 0), **kw)


def _trace(**kw: Any) -> Trace:
    spans = kw.pop("spans", None) or [
        _span("root", "handle_request", parent=None, span_type="agent", project="bot"),
        _span("s1", "search_web", span_type="tool", attributes={"tenant": "acme", "retries": 2}, cost_usd=0.02),
        _span("s2", "call_llm", span_type="llm", cost_usd=0.03),
    ]
    return Trace(trace_id="t", version=1, project=kw.pop("project", "bot"), status=kw.pop("status", "complete"),
                 close_reason="quiet_period", root_span_id="root", start_ns=0,
                 end_ns=kw.pop("end_ns", 150_000_000), spans=spans, **kw)


def _flt(**kw: Any) -> RuleFilter:
    return RuleFilter.model_validate(kw)


def test_empty_filter_matches_everything() -> None:
    assert filter_mismatch(RuleFilter(), _trace()) is None


def test_project_filter() -> None:
    assert filter_mismatch(_flt(project="bot"), _trace()) is None
    assert filter_mismatch(_flt(project=["other", "bot"]), _trace()) is None
    reason = filter_mismatch(_flt(project="other"), _trace())
    assert reason is not None and "'bot'" in reason and "project" in reason


@pytest.mark.parametrize("pattern, matches", [("search_*", True), ("search_web", True), ("*_llm", True),
                                              ("search", False), ("web_*", False), ("Search_*", False)])
def test_span_name_glob(pattern: str, matches: bool) -> None:
    reason = filter_mismatch(_flt(span_name=pattern), _trace())
    assert (reason is None) is matches
    if not matches:
        assert "span_name" in reason


def test_span_type_filter() -> None:
    assert filter_mismatch(_flt(span_type="tool"), _trace()) is None
    assert filter_mismatch(_flt(span_type=["retriever", "llm"]), _trace()) is None
    assert filter_mismatch(_flt(span_type="retriever"), _trace()) is not None


def test_attributes_filter() -> None:
    assert filter_mismatch(_flt(attributes={"tenant": "acme"}), _trace()) is None
    assert filter_mismatch(_flt(attributes={"tenant": "acme", "retries": 2}), _trace()) is None
    assert filter_mismatch(_flt(attributes={"tenant": "globex"}), _trace()) is not None
    assert filter_mismatch(_flt(attributes={"region": "eu"}), _trace()) is not None


def test_span_conditions_must_hold_on_one_span() -> None:
    # search_web is a tool, call_llm is an llm: no single span is an llm named search_*
    assert filter_mismatch(_flt(span_name="search_*", span_type="tool"), _trace()) is None
    assert filter_mismatch(_flt(span_name="search_*", span_type="llm"), _trace()) is not None
    assert filter_mismatch(_flt(span_name="call_*", attributes={"tenant": "acme"}), _trace()) is not None


def test_has_error_filter() -> None:
    ok = _trace()
    bad = _trace(spans=[*ok.spans, _span("e", "boom", status="error")])
    assert filter_mismatch(_flt(has_error=True), bad) is None
    assert filter_mismatch(_flt(has_error=False), ok) is None
    assert "no error" in filter_mismatch(_flt(has_error=True), ok)
    assert "has an error" in filter_mismatch(_flt(has_error=False), bad)


def test_min_duration_filter_inclusive_boundary() -> None:
    trace = _trace(end_ns=150_000_000)  # 150 ms
    assert filter_mismatch(_flt(min_duration_ms=150), trace) is None
    assert filter_mismatch(_flt(min_duration_ms=100), trace) is None
    reason = filter_mismatch(_flt(min_duration_ms=150.5), trace)
    assert reason is not None and "150" in reason


def test_min_cost_filter_sums_spans_and_skips_missing_costs() -> None:
    trace = _trace()  # 0.02 + 0.03 + None
    assert filter_mismatch(_flt(min_cost_usd=0.05), trace) is None
    assert filter_mismatch(_flt(min_cost_usd=0.04), trace) is None
    assert filter_mismatch(_flt(min_cost_usd=0.06), trace) is not None


def test_status_filter() -> None:
    assert filter_mismatch(_flt(status="complete"), _trace()) is None
    assert filter_mismatch(_flt(status="incomplete"), _trace(status="incomplete")) is None
    reason = filter_mismatch(_flt(status="incomplete"), _trace())
    assert reason is not None and "complete" in reason


def test_all_conditions_must_hold() -> None:
    flt = _flt(project="bot", span_type="tool", min_duration_ms=1000)
    assert filter_mismatch(flt, _trace(end_ns=2_000_000_000)) is None
    assert filter_mismatch(flt, _trace(end_ns=10_000_000)) is not None
    assert filter_mismatch(flt, _trace(end_ns=2_000_000_000, project="x")) is not None


def test_ruleset_filter_from_yaml_matches(tmp_path: Path) -> None:
    rs: RuleSet = load_rules(_write(tmp_path, "r.yaml", "rules:\n  - name: r\n    scorer: error_spans\n"
                                                        "    filter: {project: bot, span_type: tool}\n"))
    assert filter_mismatch(rs.rules[0].filter, _trace()) is None
    assert filter_mismatch(rs.rules[0].filter, _trace(project="other")) is not None


# -- custom scorers referenced by dotted path -------------------------------------------------------

@scorer(threshold=0.5)
def scaled(target: Any, factor: float = 1.0) -> float:
    return 0.7 * factor


class Strict(Scorer):
    name = "strict"

    def __init__(self, limit: int = 1) -> None:
        self.limit = limit


def test_dotted_path_scorers_with_valid_params_load() -> None:
    rs = parse_rules({"rules": [{"name": "a", "scorer": f"{__name__}:scaled", "params": {"factor": 2}},
                                {"name": "b", "scorer": f"{__name__}:Strict", "params": {"limit": 3}}]})
    assert [r.scorer for r in rs.rules] == [f"{__name__}:scaled", f"{__name__}:Strict"]


def test_unknown_param_of_a_class_scorer_fails_at_load() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules({"rules": [{"name": "b", "scorer": f"{__name__}:Strict", "params": {"limt": 3}}]})
    assert info.value.rule == "b" and info.value.field == "params" and "limt" in str(info.value)


def test_unknown_param_of_a_function_scorer_fails_at_load() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules({"rules": [{"name": "a", "scorer": f"{__name__}:scaled", "params": {"factr": 2}}]})
    assert info.value.rule == "a" and info.value.field == "params"


def test_the_scorers_are_checked_only_by_the_check_handed_in() -> None:
    data = {"rules": [{"name": "x", "scorer": "no_such_scorer"}]}
    assert [r.scorer for r in rules.parse_rules(data).rules] == ["no_such_scorer"]  # the shape only
    with pytest.raises(RulesError, match="rule 'x' field 'scorer': unknown scorer 'no_such_scorer'"):
        rules.parse_rules(data, scorers=SCORERS)
    with pytest.raises(RulesError, match="rule 'x' field 'scorer'"):
        rules.check_scorers(rules.parse_rules(data), SCORERS, "rules.yaml")
