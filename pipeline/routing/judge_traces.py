"""The pipeline does not judge its own judges: a trace of project `evalstream-judges` (a judge's evaluation
trace, `contracts/evaluation_traces.py`) is skipped by every rule whose filter does not list that project.

Skipped without a decision: a filtered_out row per rule for every judged job would multiply the decisions
by the number of rules. `evalstream why` on such a trace says why it has none (`storage/explain.py`).
"""

from __future__ import annotations

from pipeline.contracts import Trace
from pipeline.contracts.evaluation_traces import JUDGE_PROJECT
from pipeline.rules.model import RuleFilter

SKIP_REASON = (f"a judge's evaluation trace (project {JUDGE_PROJECT}): only rules whose filter lists that "
               f"project judge it, and they decide it as any trace")


def skips_judge_trace(flt: RuleFilter, trace: Trace) -> bool:
    """Whether a rule with filter `flt` leaves `trace` alone because it is a judge's evaluation trace."""
    return trace.project == JUDGE_PROJECT and JUDGE_PROJECT not in (flt.project or ())
