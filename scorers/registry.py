"""Find a scorer by name. Resolution order:

1. a built-in (`trace_latency`, `error_spans`, ...);
2. an entry point of an installed package, in the group `evalstream.scorers`
   (`[project.entry-points."evalstream.scorers"] my_judge = "my_pkg.judges:MyJudge"`);
3. a dotted path `package.module:attribute` (the ':' tells it apart from a name);
4. an uploaded scorer (`evalstream scorers upload`), in processes that have a source of uploads:
   workers (the latest version on `evalstream.scorers.v1`) and `rules check` while a broker runs.

An upload cannot take a built-in's or an installed entry point's name, so a name means the same
scorer everywhere.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol

from pipeline.errors import ScorerNotFoundError
from scorers.base import Scorer

ENTRY_POINT_GROUP = "evalstream.scorers"


class UploadedScorerSource(Protocol):
    def scorer_class(self, name: str) -> type[Scorer] | None:
        """The class that runs uploaded scorer `name`, or None when this source does not have it."""


_uploaded: UploadedScorerSource | None = None


def use_uploaded_scorers(source: UploadedScorerSource | None) -> UploadedScorerSource | None:
    """Make uploaded scorers resolvable in this process (None: not any more); returns the previous source."""
    global _uploaded
    previous, _uploaded = _uploaded, source
    return previous


def _builtins() -> dict[str, type[Scorer]]:
    from scorers.builtin import BUILTINS

    return BUILTINS


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def refresh_entry_points() -> None:
    """Forget the cached entry points (after installing a package into the running process)."""
    _entry_points.cache_clear()


def builtin_names() -> list[str]:
    return sorted(_builtins())


def entry_point_names() -> list[str]:
    return sorted(_entry_points())


def reserved_names() -> set[str]:
    """Names an upload may not take."""
    return set(_builtins()) | set(_entry_points())


def _check(ref: str, obj: Any, what: str) -> type[Scorer]:
    if not (isinstance(obj, type) and issubclass(obj, Scorer)):
        raise ScorerNotFoundError(f"scorer {ref!r}: {what} is not a Scorer class or @scorer function")
    return obj


def _from_dotted_path(ref: str) -> type[Scorer]:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScorerNotFoundError(f"scorer {ref!r}: cannot import {module_name!r}: {exc}") from None
    return _check(ref, getattr(module, attr, None), repr(attr))


def _from_entry_point(ref: str, ep: EntryPoint) -> type[Scorer]:
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party import is reported the same way
        raise ScorerNotFoundError(f"scorer {ref!r}: entry point {ep.value!r} (group {ENTRY_POINT_GROUP}) "
                                  f"cannot be loaded: {type(exc).__name__}: {exc}") from None
    return _check(ref, obj, f"entry point {ep.value!r}")


def resolve_scorer(ref: str) -> type[Scorer]:
    builtins = _builtins()
    if ref in builtins:
        return builtins[ref]
    ep = _entry_points().get(ref)
    if ep is not None:
        return _from_entry_point(ref, ep)
    if ":" in ref:
        return _from_dotted_path(ref)
    if _uploaded is not None:
        uploaded = _uploaded.scorer_class(ref)
        if uploaded is not None:
            return uploaded
    installed = ", ".join(entry_point_names()) or "none installed"
    raise ScorerNotFoundError(
        f"unknown scorer {ref!r}: use a built-in ({', '.join(builtin_names())}), an entry point of group "
        f"{ENTRY_POINT_GROUP} ({installed}), an uploaded scorer (`evalstream scorers upload FILE`), "
        "or a dotted path 'package.module:name'"
    )


def build_scorer(ref: str, params: dict[str, Any]) -> Scorer:
    """Instantiate with the rule's params; a bad param raises TypeError or ValueError."""
    return resolve_scorer(ref)(**params)
