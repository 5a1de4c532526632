"""`async_evaluate`: attach a scoring request to a span; the pipeline runs the scorer off the hot path.

The sampling decision is `pipeline.sampling.is_sampled(trace_id, "sdk:<scorer>", rate)`, the same
function the pipeline's rules use, so the SDK and the pipeline always agree. A request that is not
sampled is still sent, without its example, so the pipeline records why nothing was scored.
"""

from __future__ import annotations

from typing import Any

from pipeline.sampling import is_sampled, sdk_rule


def scorer_ref(scorer: Any) -> str:
    """How the pipeline finds the scorer. A string is used as is (a built-in or uploaded name, or
    'package.module:Class'). A Scorer class or instance is sent by its `name`, the name it is
    registered or uploaded under; one without a name is sent as its import path."""
    if isinstance(scorer, str):
        if not scorer.strip():
            raise ValueError("scorer name must not be empty")
        return scorer.strip()
    cls = scorer if isinstance(scorer, type) else type(scorer)
    name = getattr(cls, "name", "")
    if isinstance(name, str) and name:
        return name
    module = getattr(cls, "__module__", "")
    qualname = getattr(cls, "__qualname__", "")
    if module and module != "__main__" and "<locals>" not in qualname:
        return f"{module}:{qualname}"
    raise ValueError(f"scorer {cls.__name__!r} has no name and is defined in __main__ or a function, so the "
                     "pipeline cannot find it; give it a name and upload it, or move it to a module")


def build_request(trace_id: str, scorer: Any, example: Any, sampling_rate: float, threshold: float | None,
                  params: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
    if not 0.0 <= sampling_rate <= 1.0:
        raise ValueError(f"sampling_rate={sampling_rate}: must be between 0 and 1")
    ref = scorer_ref(scorer)
    sampled = is_sampled(trace_id, sdk_rule(ref), sampling_rate)
    request: dict[str, Any] = {"scorer": ref, "sampling_rate": sampling_rate}
    if threshold is not None:
        request["threshold"] = threshold
    if params:
        request["params"] = params
    if sampled:
        request["example"] = example if example is not None else {}
    return request, sampled
