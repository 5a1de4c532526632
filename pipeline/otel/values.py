"""Attribute values of OpenTelemetry spans, made JSON-able, capped and read as the wire span's fields."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from pipeline.contracts.bounds import is_cost, is_count

TRUNCATED = "…[truncated]"
_MAX_INDEX_DIGITS = 32  # int() refuses strings of over 4300 digits; no index or count is this long
_MAX_DEPTH = 64  # orjson writes at most 254 levels of nesting, and a wire span wraps a value in a few more


def plain(value: Any) -> Any:
    """A JSON-able copy of an attribute value (OpenTelemetry values are scalars, sequences and maps)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)  # orjson encodes 64-bit integers only
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [plain(v) for v in value]
    return str(value)


def cap(value: Any, max_bytes: int) -> Any:
    """`value` if its JSON fits in `max_bytes`, else its (JSON) text cut to fit and marked."""
    if isinstance(value, str):
        if len(value) * 4 <= max_bytes:
            return value
        raw = value.encode()
    elif value is None or isinstance(value, bool | int | float):
        return value
    elif _too_deep(value):  # orjson could not write it: keep it as text
        return cap(str(value), max_bytes)
    else:
        raw = orjson.dumps(value)
    if len(raw) <= max_bytes:
        return value
    return raw[:max_bytes].decode(errors="ignore") + TRUNCATED


def is_index(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= _MAX_INDEX_DIGITS


def _too_deep(value: Any, depth: int = 0) -> bool:
    if isinstance(value, Mapping):
        items: Any = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return False
    return depth >= _MAX_DEPTH or any(_too_deep(item, depth + 1) for item in items)


def parsed_json(text: str) -> Any:
    """The JSON document in `text`, or `text` itself if it is not JSON or nested too deep to write back
    (orjson reads 1024 levels but writes only 254)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return text if _too_deep(value) else value


def as_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def as_count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if (isinstance(value, float) and value.is_integer()) or (isinstance(value, str) and is_index(value)):
        value = int(value)
    return value if is_count(value) else None


def as_usd(value: Any) -> float | None:
    return float(value) if is_cost(value) else None


def json_or_text(value: Any) -> Any:
    """A JSON document if the string holds one (messages and tool arguments are sent as JSON text)."""
    if isinstance(value, str):
        if not value:
            return None
        return parsed_json(value) if value[0] in "[{" else value
    return plain(value)


def unflatten(flat: Mapping[str, Any]) -> Any:
    """{"0.message.role": "user"} -> [{"message": {"role": "user"}}]: numeric segments are list indices."""
    root: dict[str, Any] = {}
    for path, value in flat.items():
        node = root
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if not isinstance(node.get(leaf), dict):  # a leaf never hides a subtree with the same name
            node[leaf] = plain(value)
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(is_index(key) for key in node):
        return [_lists(node[key]) for key in sorted(node, key=int)]
    return {key: _lists(value) for key, value in node.items()}
