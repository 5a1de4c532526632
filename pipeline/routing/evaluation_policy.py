"""The trust boundary for `async_evaluate` requests: what a span may ask the scorers to run.

A span is written by whoever can reach the spans topic or the OTLP receiver, so its requests never
choose code, endpoints or credentials. The operator decides in the rules file (`sdk_evaluations`):

- a scorer listed there runs with the params the operator fixed for it (provider, key variable, limits);
  the span may add the other params its scorer declares, never one the operator fixed;
- otherwise built-in code scorers and uploaded scorers may be named (each can be turned off);
- a judge, an installed entry point or a dotted `module:attr` name is refused unless listed;
- params only an operator may set (`Scorer.operator_params`: endpoint, key, model, limits) are refused;
  the rest are validated against the scorer's declared params, and unknown keys are refused.

A refusal is a `failed` decision whose reason says which of these it broke.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pipeline.contracts import EvaluationRequest
from pipeline.errors import ScorerError
from pipeline.rules.model import SdkEvaluations
from scorers.base import Scorer
from scorers.params import declared_params
from scorers.registry import ScorerResolver


@dataclass(frozen=True)
class Admitted:
    scorer: str  # what the scorer worker resolves
    params: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    code: str  # a short, fixed label for the counter
    reason: str  # for the decision and `evalstream why`


class EvaluationPolicy:
    """`scorers`: the process's resolver (listed scorers may be uploaded ones; installed entry points are its)."""

    def __init__(self, config: SdkEvaluations, scorers: ScorerResolver) -> None:
        self.config = config
        self.scorers = scorers

    def admit(self, request: EvaluationRequest) -> Admitted | Refused:
        config, name = self.config, request.scorer
        if not config.enabled:
            return Refused("disabled", "async_evaluate requests are turned off (sdk_evaluations.enabled: false)")
        entry = config.listed(name)
        if entry is not None:
            return self._listed(request, entry.ref, entry.params, entry.allow_model_override)
        if ":" in name:
            return Refused("dotted_name", f"scorer {name!r}: a 'module:attr' name is never taken from a span; "
                                          "the operator can list it under sdk_evaluations.scorers")
        code, judges = _builtin_kinds()
        installed = self.scorers.entry_points
        if name in code:
            if not config.code_scorers:
                return Refused("not_allowed", f"built-in scorer {name!r}: code scorers are turned off for spans "
                                              "(sdk_evaluations.code_scorers: false)")
            return _checked(request, name, code[name], fixed={}, operator_only=code[name].operator_params)
        if name in judges:
            return Refused("judge_not_listed", f"judge {name!r} runs for a span only when the operator lists it, "
                                               "with its provider settings, under sdk_evaluations.scorers")
        if name in installed:
            return Refused("not_listed", f"installed scorer {name!r} runs for a span only when listed under "
                                         "sdk_evaluations.scorers")
        if not config.uploaded_scorers:
            return Refused("not_allowed", f"scorer {name!r}: uploaded scorers are turned off for spans "
                                          "(sdk_evaluations.uploaded_scorers: false)")
        # An uploaded scorer runs sandboxed; the sandbox checks its params when it builds it.
        return Admitted(name, dict(request.params))

    def _listed(self, request: EvaluationRequest, ref: str, fixed: dict[str, Any],
                allow_model: bool) -> Admitted | Refused:
        try:
            cls = self.scorers.resolve(ref)
        except ScorerError as exc:
            return Refused("unknown_scorer", f"scorer {request.scorer!r} (listed as {ref!r}): {exc}")
        operator_only = cls.operator_params - ({"model"} if allow_model else set())
        return _checked(request, ref, cls, fixed=fixed, operator_only=operator_only)


def _checked(request: EvaluationRequest, ref: str, cls: type[Scorer], *, fixed: dict[str, Any],
             operator_only: frozenset[str] | set[str]) -> Admitted | Refused:
    given = request.params
    clash = sorted(set(given) & set(fixed))
    if clash:
        return Refused("fixed_param", f"scorer {request.scorer!r}: {', '.join(clash)} set by the operator "
                                      "(sdk_evaluations.scorers); a span cannot change them")
    forbidden = sorted(set(given) & set(operator_only))
    if forbidden:
        return Refused("operator_param", f"scorer {request.scorer!r}: {', '.join(forbidden)} choose where the scorer "
                                         "sends data, with which credentials or at what cost; only the operator "
                                         "sets them (sdk_evaluations.scorers)")
    params = {**given, **fixed}
    model = declared_params(cls)
    if model.model_config.get("extra") == "allow":  # it takes any params (uploaded): checked where it runs
        return Admitted(ref, params)
    try:
        model.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "params"
        return Refused("invalid_params", f"scorer {request.scorer!r}: param {where}: {err['msg']}")
    return Admitted(ref, params)


def _builtin_kinds() -> tuple[dict[str, type[Scorer]], dict[str, type[Scorer]]]:
    from scorers.builtin import CODE_SCORERS
    from scorers.judges import JUDGES

    return CODE_SCORERS, JUDGES
