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


def pack_items(field: str, parts: Sequence[bytes], max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[tuple[bytes, int]]:
    """Encoded items -> `{"v": 1, field: [items]}` messages of at most `max_bytes`, in order, with the index
    of each message's first item. An item too big to share a message goes alone, so its reader's size
    check names it rather than the packer dropping it."""
    head, tail = b'{"v":1,"' + field.encode() + b'":[', b"]}"
    start, size = 0, len(head) + len(tail)
    for i, part in enumerate(parts):
        if i > start and size + len(part) + 1 > max_bytes:
            yield head + b",".join(parts[start:i]) + tail, start
            start, size = i, len(head) + len(tail)
        size += len(part) + 1
    if start < len(parts):
        yield head + b",".join(parts[start:]) + tail, start


def decode(raw: bytes | None, model: type[M], *, max_bytes: int = DEFAULT_MAX_BYTES) -> M:
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
    # A contract that enters from outside caps its nesting (`max_depth`), so that what it carries can be
    # written again inside the messages that wrap it downstream.
    max_depth = getattr(model, "max_depth", None)
    if max_depth is not None and _too_deep(raw, data, max_depth):
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
