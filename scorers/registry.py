"""Find a scorer by name: a built-in, or a dotted path `package.module:attribute`."""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.errors import ScorerNotFoundError
from scorers.base import Scorer


def _builtins() -> dict[str, type[Scorer]]:
    from scorers.builtin import BUILTINS

    return BUILTINS


def builtin_names() -> list[str]:
    return sorted(_builtins())


def resolve_scorer(ref: str) -> type[Scorer]:
    builtins = _builtins()
    if ref in builtins:
        return builtins[ref]
    if ":" not in ref:
        raise ScorerNotFoundError(
            f"unknown scorer {ref!r}: use a built-in ({', '.join(builtin_names())}) "
            "or a dotted path 'package.module:name'"
        )
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScorerNotFoundError(f"scorer {ref!r}: cannot import {module_name!r}: {exc}") from None
    obj: Any = getattr(module, attr, None)
    if not (isinstance(obj, type) and issubclass(obj, Scorer)):
        raise ScorerNotFoundError(f"scorer {ref!r}: {attr!r} is not a Scorer class or @scorer function")
    return obj


def build_scorer(ref: str, params: dict[str, Any]) -> Scorer:
    """Instantiate with the rule's params; a bad param is reported as ScorerNotFoundError's sibling TypeError."""
    return resolve_scorer(ref)(**params)
