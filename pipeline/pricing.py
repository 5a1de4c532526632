"""LLM prices from litellm's bundled cost map (never fetched over the network)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

log = logging.getLogger("evalstream.pricing")


class LiteLLMPrices:
    """`cost_usd(model, input_tokens, output_tokens)`; None for models litellm does not know."""

    def __init__(self) -> None:
        self._litellm: Any = None
        self._unavailable = False
        self._unknown: set[str] = set()
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Import litellm now (about 3 s) rather than on the first priced span."""
        self._load()

    def _load(self) -> Any:
        with self._lock:
            if self._litellm is None and not self._unavailable:
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                try:
                    import litellm
                except ImportError:
                    self._unavailable = True
                    log.warning("litellm is not installed: LLM spans without a cost keep cost_usd empty")
                else:
                    self._litellm = litellm
        return self._litellm

    def cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        if model in self._unknown:
            return None
        litellm = self._load()
        if litellm is None:
            return None
        try:
            prompt, completion = litellm.cost_per_token(model=model, prompt_tokens=input_tokens,
                                                        completion_tokens=output_tokens)
        except Exception:  # noqa: BLE001 - litellm raises for models missing from its map
            self._unknown.add(model)
            log.info("no price for model %r in litellm's cost map; its spans keep cost_usd empty", model)
            return None
        return float(prompt) + float(completion)
