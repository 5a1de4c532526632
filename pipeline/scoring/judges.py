"""The judges' configuration from Settings: `EVALSTREAM_JUDGE_*` over the defaults of `JudgeConfig`.

A rule's params (model, api_base, api_key, api_key_env, limits) beat both for its judge. The composition
root builds one `JudgeClient` from this (`scoring/resolvers.py`); a sandbox builds its own for an uploaded
scorer that calls models, from the variables it may see.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline.settings import Settings
from scorers.judges.config import JudgeConfig


def judge_config(settings: Settings, variables: Mapping[str, str] | None = None) -> JudgeConfig:
    """`variables`: where a rule's `api_key_env: NAME` is looked up. The process environment is passed on
    (the default), because a rules file may name any variable that holds a key."""
    key = settings.judge_api_key
    return JudgeConfig.resolve(
        model=settings.judge_model, api_base=settings.judge_api_base, api_key=key.get_secret_value() if key else None,
        max_concurrency=settings.judge_max_concurrency, requests_per_minute=settings.judge_requests_per_minute,
        tokens_per_minute=settings.judge_tokens_per_minute, timeout_s=settings.judge_timeout_s,
        max_attempts=settings.judge_max_attempts, cache_size=settings.judge_cache_size,
        send_spacing_ms=settings.judge_send_spacing_ms, variables=os.environ if variables is None else variables)
