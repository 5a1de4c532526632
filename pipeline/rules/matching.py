"""Does a trace (or, for a span rule, a span) pass a rule's filter? Pure; returns the reason when it does not."""

from __future__ import annotations

from fnmatch import fnmatchcase

from pipeline.contracts import Session, Span, Trace
from pipeline.rules.model import RuleFilter


def filter_mismatch(flt: RuleFilter, trace: Trace) -> str | None:
    """None when the trace matches; otherwise a short reason for the decision row."""
    if flt.project is not None and trace.project not in flt.project:
        return f"project {trace.project!r} not in {flt.project}"
    if flt.status is not None and trace.status not in flt.status:
        return f"trace status {trace.status} not in {flt.status}"
    if flt.has_error is not None and trace.has_error != flt.has_error:
        return "trace has no error span" if flt.has_error else "trace has an error span"
    if flt.min_duration_ms is not None and trace.duration_ms < flt.min_duration_ms:
        return f"duration {trace.duration_ms:.0f} ms < {flt.min_duration_ms:g} ms"
    if flt.min_cost_usd is not None and trace.cost_usd < flt.min_cost_usd:
        return f"cost ${trace.cost_usd:.4f} < ${flt.min_cost_usd:g}"
    if _has_span_conditions(flt) and not any(_span_matches(flt, s) for s in trace.spans):
        return f"no span matches {'/'.join(_span_condition_names(flt))}"
    return None


def trace_level_mismatch(flt: RuleFilter, trace: Trace) -> str | None:
    """A span rule's conditions on the trace: project and trace status."""
    if flt.project is not None and trace.project not in flt.project:
        return f"project {trace.project!r} not in {flt.project}"
    if flt.status is not None and trace.status not in flt.status:
        return f"trace status {trace.status} not in {flt.status}"
    return None


def matching_spans(flt: RuleFilter, trace: Trace) -> list[Span]:
    """A span rule's subjects: the spans that meet every span-level condition, has_error, min_duration_ms
    and min_cost_usd asked of each span. In start order (then span id), which is the order the cap keeps."""
    found = [s for s in trace.spans if _span_matches(flt, s) and _span_measures_match(flt, s)]
    return sorted(found, key=lambda s: (s.start_ns, s.span_id))


def no_span_reason(flt: RuleFilter, trace: Trace) -> str:
    """Why a span rule found no subject in a trace: the conditions, and how many spans were looked at."""
    given = [*_span_condition_names(flt),
             *(name for name in ("has_error", "min_duration_ms", "min_cost_usd") if getattr(flt, name) is not None)]
    what = "/".join(given) if given else "the filter"
    return f"no span of {len(trace.spans)} matches {what}"


def _has_span_conditions(flt: RuleFilter) -> bool:
    return bool(_span_condition_names(flt))


def _span_condition_names(flt: RuleFilter) -> list[str]:
    return [name for name in ("span_name", "span_type", "attributes", "model", "agent")
            if getattr(flt, name) not in (None, {})]


def _span_matches(flt: RuleFilter, span: Span) -> bool:
    if flt.span_name is not None and not fnmatchcase(span.name, flt.span_name):
        return False
    if flt.span_type is not None and span.span_type not in flt.span_type:
        return False
    if flt.model is not None and span.model not in flt.model:
        return False
    if flt.agent is not None and span.agent_name not in flt.agent:
        return False
    if flt.attributes:
        for key, want in flt.attributes.items():
            if key not in span.attributes or span.attributes[key] != want:
                return False
    return True


def _span_measures_match(flt: RuleFilter, span: Span) -> bool:
    if flt.has_error is not None and (span.status == "error") != flt.has_error:
        return False
    if flt.min_duration_ms is not None and span.duration_ms < flt.min_duration_ms:
        return False
    return flt.min_cost_usd is None or (span.cost_usd or 0.0) >= flt.min_cost_usd


def session_filter_mismatch(flt: RuleFilter, session: Session) -> str | None:
    """The same for a session rule (its filter has session-level conditions only, see RuleSubject).
    `status` is the closed session's; an open snapshot is not held to it."""
    if flt.project is not None and session.project not in flt.project:
        return f"project {session.project!r} not in {flt.project}"
    if flt.status is not None and not session.is_open and session.status not in flt.status:
        return f"session status {session.status} not in {flt.status}"
    if flt.has_error is not None and session.has_error != flt.has_error:
        return "no turn has an error span" if flt.has_error else "a turn has an error span"
    if flt.min_duration_ms is not None and session.duration_ms < flt.min_duration_ms:
        return f"duration {session.duration_ms:.0f} ms < {flt.min_duration_ms:g} ms"
    if flt.min_cost_usd is not None and session.cost_usd < flt.min_cost_usd:
        return f"cost ${session.cost_usd:.4f} < ${flt.min_cost_usd:g}"
    return None
