"""What params a scorer declares, as a pydantic model, so untrusted params can be checked before use.

A scorer's params are its constructor's keyword arguments (for a `@scorer` function, the function's
arguments after the target). A class may instead set `Params` to a pydantic model of its own. Keyword
arguments passed on with `**kwargs` are followed up the class hierarchy, so a judge declares the shared
judge params of its base class too. Unknown keys are refused: the model forbids extras, except for a
scorer that takes any `**params` itself (an uploaded scorer, whose sandbox checks them when it builds it).
"""

from __future__ import annotations

import inspect
import warnings
from functools import cache
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, create_model

from scorers.base import Scorer


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class _OpenParams(BaseModel):
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)


def declared_params(cls: type[Scorer]) -> type[BaseModel]:
    """The params model of a scorer class (its `Params`, else one built from its constructor)."""
    own = cls.__dict__.get("Params")
    if isinstance(own, type) and issubclass(own, BaseModel):
        return own
    return _from_signature(cls)


@cache  # one entry per scorer class: classes are few and live as long as the process
def _from_signature(cls: type[Scorer]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    chain, open_ended = _signature_chain(cls)
    for depth, (fn, skip) in enumerate(chain):
        hints = _hints(fn)
        for index, param in enumerate(inspect.signature(fn).parameters.values()):
            if index < skip or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL) or param.name in fields:
                continue
            annotation = hints.get(param.name, Any)
            if param.default is not param.empty:
                fields[param.name] = (annotation, param.default)
            elif depth == 0:
                fields[param.name] = (annotation, ...)
            else:  # a base class's required param may be one the subclass passes itself (a preset's question)
                fields[param.name] = (annotation | None, None)
    with warnings.catch_warnings():  # a param named like a BaseModel attribute ("schema") is still a param
        warnings.simplefilter("ignore")
        return create_model(f"{cls.__name__}Params", __base__=_OpenParams if open_ended else _Params, **fields)


def _signature_chain(cls: type[Scorer]) -> tuple[list[tuple[Any, int]], bool]:
    """(callable, leading parameters to skip) from the class down to where `**kwargs` stop, and whether
    they never stop (the scorer takes any params)."""
    wrapped = getattr(cls, "__wrapped__", None)
    if wrapped is not None:  # a @scorer function: fn(target, **params)
        return [(wrapped, 1)], _takes_any(wrapped)
    chain: list[tuple[Any, int]] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is Scorer:  # the base refuses params: `**params` that reach it are the subclass's own
            return chain, bool(chain) and _takes_any(chain[-1][0])
        chain.append((init, 1))
        if not _takes_any(init):
            return chain, False
    return chain, True


def _takes_any(fn: Any) -> bool:
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation we cannot resolve is checked as Any, not refused
        return {}
