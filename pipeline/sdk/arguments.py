"""Name a call's arguments (on the exporter's thread): `f(1, y=2)` → {"x": 1, "y": 2}.

`Signature.bind_partial` costs microseconds per call; for the common signature (no *args,
**kwargs or positional-only parameters) zipping precomputed names gives the same result.
"""

from __future__ import annotations

import inspect
from typing import Any

_SKIPPED = ("self", "cls")
_SIMPLE = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ArgBinder:
    __slots__ = ("names", "signature", "simple")

    def __init__(self, fn: Any) -> None:
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self.simple = all(p.kind in _SIMPLE for p in params)
        self.names = tuple(p.name for p in params if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD)

    def bind(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.simple and len(args) <= len(self.names):
            bound = dict(zip(self.names, args, strict=False))
            if kwargs:
                bound.update(kwargs)
        else:
            try:
                bound = dict(self.signature.bind_partial(*args, **kwargs).arguments)
            except TypeError:
                return {"args": list(args), "kwargs": kwargs}
        for name in _SKIPPED:
            bound.pop(name, None)
        return bound
