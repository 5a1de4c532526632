"""How a process's judges call models: one `JudgeConfig`, built once and given to its `JudgeClient`.

Resolved as the SDK's configuration is: an argument beats the environment, which beats the default
here. The pipeline reads the environment in one place, its `Settings` (`EVALSTREAM_JUDGE_*`), and
builds this from them (`pipeline/scoring/resolvers.py`); a rule's params (`model`, `api_base`,
`api_key`, `api_key_env`, limits) beat it for that rule's judge. Nothing here reads the environment.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from scorers.judges.limits import ModelLimits

DEFAULT_MODEL = "openai/gpt-4o-mini"
SEND_SPACING_S = 0.004  # the least time between two requests leaving a process (see JudgeClient)


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    max_retry_after_s: float = 60.0  # a provider asking for longer: give the job back to the runner now
    timeout_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class JudgeConfig:
    """The judge client's limits, retries and cache, and the defaults of every judge that uses it.

    `variables`: where a rule's `api_key_env: NAME` is looked up (the process environment, passed on by
    the composition root); empty, no rule can name a variable.
    """

    model: str = DEFAULT_MODEL
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    limits: ModelLimits = field(default_factory=ModelLimits)
    retry: RetrySettings = RetrySettings()
    cache_size: int = 1024
    history_size: int = 1000
    send_spacing_s: float = SEND_SPACING_S
    variables: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def resolve(cls, *, model: str | None = None, api_base: str | None = None, api_key: str | None = None,
                max_concurrency: int | None = None, requests_per_minute: float | None = None,
                tokens_per_minute: float | None = None, timeout_s: float | None = None,
                max_attempts: int | None = None, cache_size: int | None = None,
                send_spacing_ms: float | None = None, variables: Mapping[str, str] | None = None) -> JudgeConfig:
        """A value given (not None) beats the default."""
        default = cls()
        return cls(
            model=model or default.model,
            api_base=api_base or None,
            api_key=api_key or None,
            limits=ModelLimits(
                max_concurrency=default.limits.max_concurrency if max_concurrency is None else max_concurrency,
                requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute),
            retry=RetrySettings(
                max_attempts=default.retry.max_attempts if max_attempts is None else max_attempts,
                timeout_s=default.retry.timeout_s if timeout_s is None else timeout_s),
            cache_size=default.cache_size if cache_size is None else cache_size,
            send_spacing_s=default.send_spacing_s if send_spacing_ms is None else send_spacing_ms / 1000,
            variables=variables if variables is not None else {},
        )

    def variable(self, name: str) -> str | None:
        """The value of the variable a rule's `api_key_env` names, or None when it is not set."""
        return self.variables.get(name) or None
