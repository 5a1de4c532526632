"""Bytes <-> contract models with orjson, turning every bad input into a DecodeError."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from pipeline.errors import DecodeError, OversizedError

M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
_ORJSON_WRITE_DEPTH = 254  # orjson reads 1024 levels of nesting but writes only this many


def encode(model: BaseModel) -> bytes:
    return orjson.dumps(model.model_dump(mode="json", exclude_none=True))


def pack_items(field: str, parts: Sequence[bytes], max_bytes: int = DEFAULT_MAX_BYTES, *,
               kind: str | None = None) -> Iterator[tuple[bytes, int]]:
    """Encoded items -> `{"v": 1, field: [items]}` messages of at most `max_bytes`, in order, with the index
    of each message's first item. An item too big to share a message goes alone, so its reader's size
    check names it rather than the packer dropping it."""
    head = b'{"v":1,' + (b'"kind":"' + kind.encode() + b'",' if kind else b"") + b'"' + field.encode() + b'":['
    tail = b"]}"
    start, size = 0, len(head) + len(tail)
    for i, part in enumerate(parts):
        if i > start and size + len(part) + 1 > max_bytes:
            yield head + b",".join(parts[start:i]) + tail, start
            start, size = i, len(head) + len(tail)
        size += len(part) + 1
    if start < len(parts):
        yield head + b",".join(parts[start:]) + tail, start


def pack_groups(fields: Sequence[str], groups: Sequence[Sequence[Sequence[bytes]]],
                max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[tuple[bytes, int]]:
    """Groups of encoded items, one list per field (a trace and its decisions) -> `{"v": 1, field: [...], ...}`
    messages of at most `max_bytes`, in order, a group never split across messages, with the index of each
    message's first group. A group too big to share a message goes alone, as in `pack_items`."""
    overhead = len(b'{"v":1}') + sum(len(f) + 6 for f in fields)

    def message(chunk: Sequence[Sequence[Sequence[bytes]]]) -> bytes:
        lists = [b'"' + f.encode() + b'":[' + b",".join(p for g in chunk for p in g[k]) + b"]"
                 for k, f in enumerate(fields)]
        return b'{"v":1,' + b",".join(lists) + b"}"

    start, size = 0, overhead
    for i, group in enumerate(groups):
        grown = sum(len(p) + 1 for items in group for p in items)
        if i > start and size + grown > max_bytes:
            yield message(groups[start:i]), start
            start, size = i, overhead
        size += grown
    if start < len(groups):
        yield message(groups[start:]), start


def decode(raw: bytes | None, model: type[M], *, max_bytes: int = DEFAULT_MAX_BYTES) -> M:
    return validate(load_object(raw, max_bytes=max_bytes), model, raw)


def validate_each(data: dict, model: type[M], field: str, raw: bytes | None = None) -> list[M | DecodeError]:
    """A message of many items (`{"v": 1, field: [...]}`, loaded) -> each item validated alone, so that a
    bad one is refused, naming its index, while the others go on. A bad envelope raises DecodeError."""
    items = data.get(field)
    if not isinstance(items, list):
        raise DecodeError(f"expected a list in {field!r}, got {type(items).__name__}")
    # Items sit two levels down: if the whole message is within the items' limit plus two, each item is
    # within it, and only then is the (costlier) check per item skipped.
    max_depth = getattr(model, "max_depth", None)
    shallow = raw is not None and max_depth is not None and not _too_deep(raw, data, max_depth + 2)
    out: list[M | DecodeError] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise DecodeError(f"expected a JSON object, got {type(item).__name__}")
            out.append(validate(item, model, None if shallow else raw))
        except DecodeError as exc:
            out.append(DecodeError(f"{field}[{index}]: {exc}"))
    return out


def load_object(raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """Bytes -> a JSON object, within the size limit."""
    if raw is None:
        raise DecodeError("empty message (no value)")
    if len(raw) > max_bytes:
        raise OversizedError(f"message of {len(raw)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object, got {type(data).__name__}")
    return data


def validate(data: dict, model: type[M], raw: bytes | None = None) -> M:
    """A decoded JSON object -> the model; `raw` is the message it came in, for a quick nesting check."""
    # A contract that enters from outside caps its nesting (`max_depth`), so that what it carries can be
    # written again inside the messages that wrap it downstream.
    max_depth = getattr(model, "max_depth", None)
    if max_depth is not None and raw is not None and _too_deep(raw, data, max_depth):
        raise DecodeError(f"nested deeper than {max_depth} levels")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DecodeError(f"does not match {model.__name__} v1: {_summarize(exc)}") from None


def _too_deep(raw: bytes, data: dict, max_depth: int) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= max_depth:  # most messages cannot be that deep
        return False
    probe: object = data
    for _ in range(_ORJSON_WRITE_DEPTH - max_depth):  # C speed: orjson fails past its limit
        probe = [probe]
    try:
        orjson.dumps(probe)
    except orjson.JSONEncodeError:
        return True
    return False


def _summarize(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
