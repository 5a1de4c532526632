"""Turn captured Python values into bounded, redacted JSON values (on the exporter's thread).

Order: to JSON values → secret-looking keys masked → the user's `redact` hook → size cap. If the
hook fails, the value is withheld rather than sent unredacted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import orjson

from pipeline.sdk.internal import report

REDACTED = "[REDACTED]"
TRUNCATED = "…[truncated]"
_SECRET_KEY = re.compile(
    r"^(.*[-_])?(password|passwd|pwd|secret|api[-_]?key|apikey|token|access[-_]?token|refresh[-_]?token"
    r"|authorization|cookie|set-cookie|private[-_]?key|client[-_]?secret|credentials?)$",
    re.IGNORECASE,
)
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _fallback(value: Any) -> Any:
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic models, without importing pydantic here
        return model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return repr(value)


def to_json_value(value: Any) -> Any:
    """A JSON-able copy of `value`; anything orjson cannot encode becomes its repr."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    try:
        return orjson.loads(orjson.dumps(value, default=_fallback, option=_OPTIONS))
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)


_key_is_secret: dict[str, bool] = {}


def _secret(key: object) -> bool:
    if not isinstance(key, str):
        return False
    verdict = _key_is_secret.get(key)
    if verdict is None:
        verdict = bool(_SECRET_KEY.match(key))
        if len(_key_is_secret) < 10_000:
            _key_is_secret[key] = verdict
    return verdict


def has_secret_key(value: Any, depth: int = 0) -> bool:
    """Whether any dict key inside `value` looks like a secret (key verdicts are memoized)."""
    if depth > 32:
        return True  # too deep to check cheaply: take the masking path
    if isinstance(value, dict):
        for key, item in value.items():
            if _secret(key) or (isinstance(item, dict | list | tuple) and has_secret_key(item, depth + 1)):
                return True
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, dict | list | tuple) and has_secret_key(item, depth + 1):
                return True
    elif not isinstance(value, str | int | float | bool) and value is not None:
        return True  # a model or object: its fields are only visible once encoded
    return False


def mask_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _SECRET_KEY.match(k) else mask_secrets(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def cap(value: Any, max_bytes: int) -> Any:
    """`value` if its JSON fits in `max_bytes`, else its JSON text cut to fit and marked."""
    if isinstance(value, str):
        if len(value) * 4 <= max_bytes or len(value.encode()) <= max_bytes:
            return value
        return value.encode()[:max_bytes].decode(errors="ignore") + TRUNCATED
    if value is None or isinstance(value, int | float | bool):
        return value
    raw = orjson.dumps(value)
    if len(raw) <= max_bytes:
        return value
    return raw[:max_bytes].decode(errors="ignore") + TRUNCATED


class Capture:
    """Called once per captured field on the exporter's thread.

    Without a `redact` hook the common case is one orjson pass: the encoded bytes are checked for
    secret-looking keys and embedded as an `orjson.Fragment`, never decoded and re-encoded.
    """

    def __init__(self, max_field_bytes: int, redact: Callable[[Any], Any] | None = None) -> None:
        self.max_field_bytes = max_field_bytes
        self.redact = redact

    def __call__(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if self.redact is not None:
            return self._redacted(value)
        if isinstance(value, str):
            return cap(value, self.max_field_bytes)
        try:
            raw = orjson.dumps(value, default=_fallback, option=_OPTIONS)
        except (TypeError, orjson.JSONEncodeError):
            return cap(repr(value), self.max_field_bytes)
        if has_secret_key(value):
            raw = orjson.dumps(mask_secrets(orjson.loads(raw)))
        if len(raw) > self.max_field_bytes:
            return raw[:self.max_field_bytes].decode(errors="ignore") + TRUNCATED
        return orjson.Fragment(raw)

    def _redacted(self, value: Any) -> Any:
        clean = mask_secrets(to_json_value(value))
        try:
            clean = to_json_value(self.redact(clean))  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - fail closed: never send what could not be redacted
            report("redact hook", exc)
            return "[withheld: redact hook failed]"
        return cap(clean, self.max_field_bytes)


def redact_patterns(*patterns: str | re.Pattern[str], replacement: str = REDACTED) -> Callable[[Any], Any]:
    """A `redact` hook replacing every match of `patterns` in every string, e.g. `redact_patterns(EMAIL)`."""
    compiled = [re.compile(p) if isinstance(p, str) else p for p in patterns]

    def redact(value: Any) -> Any:
        if isinstance(value, str):
            for pattern in compiled:
                value = pattern.sub(replacement, value)
            return value
        if isinstance(value, dict):
            return {k: redact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [redact(v) for v in value]
        return value

    return redact


EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
CARD_NUMBER = r"\b(?:\d[ -]?){13,19}\b"
