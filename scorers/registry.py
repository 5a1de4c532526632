"""Find a scorer by name: a `ScorerResolver`, built once by the composition root. Resolution order:

1. a built-in (`trace_latency`, `error_spans`, ...);
2. an entry point of an installed package, in the group `evalstream.scorers`
   (`[project.entry-points."evalstream.scorers"] my_judge = "my_pkg.judges:MyJudge"`);
3. a dotted path `package.module:attribute` (the ':' tells it apart from a name);
4. an uploaded scorer (`evalstream scorers upload`), when the resolver has a source of uploads:
   workers (the latest version on `evalstream.scorers.v1`) and `rules check` while a broker runs.

An upload cannot take a built-in's or an installed entry point's name, so a name means the same
scorer everywhere. Scorers the resolver builds that call models (`Scorer.takes_judge_client`: the
judges) share its judge client, so the process has one set of limits, retries and cache.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.errors import ScorerNotFoundError
from scorers.base import Scorer

if TYPE_CHECKING:
    from scorers.judges.client import JudgeClient

ENTRY_POINT_GROUP = "evalstream.scorers"


class UploadedScorerSource(Protocol):
    def scorer_class(self, name: str) -> type[Scorer] | None:
        """The class that runs uploaded scorer `name`, or None when this source does not have it."""


def builtin_scorers() -> dict[str, type[Scorer]]:
    from scorers.builtin import BUILTINS

    return BUILTINS


def installed_entry_points() -> dict[str, EntryPoint]:
    """The `evalstream.scorers` entry points of the installed packages, read now."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def builtin_names() -> list[str]:
    return sorted(builtin_scorers())


def reserved_names() -> set[str]:
    """Names an upload may not take: the built-ins and the installed entry points."""
    return set(builtin_scorers()) | set(installed_entry_points())


class ScorerResolver:
    """Scorer names -> classes and instances, for one process (or one test).

    `judge_client`: the client every judge built here gets (default: one with the default `JudgeConfig`,
    made on first use). `uploaded`: where uploaded scorers come from (None: they are unknown here).
    `entry_points`: the installed entry points by name (default: read from the installed packages once).
    """

    def __init__(self, *, judge_client: JudgeClient | None = None, uploaded: UploadedScorerSource | None = None,
                 entry_points: Mapping[str, EntryPoint] | None = None) -> None:
        self._judge_client = judge_client
        self.uploaded = uploaded
        self._entry_points = dict(entry_points) if entry_points is not None else None

    @property
    def judge_client(self) -> JudgeClient:
        if self._judge_client is None:
            from scorers.judges.client import JudgeClient

            self._judge_client = JudgeClient()
        return self._judge_client

    @property
    def entry_points(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            self._entry_points = installed_entry_points()
        return self._entry_points

    def entry_point_names(self) -> list[str]:
        return sorted(self.entry_points)

    def reserved_names(self) -> set[str]:
        """Names an upload may not take."""
        return set(builtin_scorers()) | set(self.entry_points)

    def resolve(self, ref: str) -> type[Scorer]:
        builtins = builtin_scorers()
        if ref in builtins:
            return builtins[ref]
        ep = self.entry_points.get(ref)
        if ep is not None:
            return _from_entry_point(ref, ep)
        if ":" in ref:
            return _from_dotted_path(ref)
        if self.uploaded is not None:
            uploaded = self.uploaded.scorer_class(ref)
            if uploaded is not None:
                return uploaded
        installed = ", ".join(self.entry_point_names()) or "none installed"
        raise ScorerNotFoundError(
            f"unknown scorer {ref!r}: use a built-in ({', '.join(builtin_names())}), an entry point of group "
            f"{ENTRY_POINT_GROUP} ({installed}), an uploaded scorer (`evalstream scorers upload FILE`), "
            "or a dotted path 'package.module:name'"
        )

    def build(self, ref: str, params: dict[str, Any]) -> Scorer:
        """Instantiate with the rule's params; a bad param raises TypeError or ValueError."""
        return self.instantiate(self.resolve(ref), params)

    def instantiate(self, cls: type[Scorer], params: dict[str, Any]) -> Scorer:
        """`cls(**params)`, with this resolver's judge client for a scorer that calls models."""
        if not cls.takes_judge_client:
            return cls(**params)
        if "client" in params:
            raise TypeError(f"scorer {cls.name!r}: 'client' is not a param (the judge client is the process's)")
        return cls(**params, client=self.judge_client)

    def param_names(self, ref: str) -> set[str]:
        """The params scorer `ref` declares (`scorers.params`)."""
        from scorers.params import declared_params

        return set(declared_params(self.resolve(ref)).model_fields)


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
