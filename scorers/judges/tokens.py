"""Token estimates for budgeting prompts before they are sent (no tokenizer: 4 characters ≈ 1 token)."""

from __future__ import annotations

from typing import Any

import orjson

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def estimate_request_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    """Roughly what a provider counts as the prompt: the messages plus the tool schemas."""
    size = len(orjson.dumps(messages)) + (len(orjson.dumps(tools)) if tools else 0)
    return size // CHARS_PER_TOKEN + 1
