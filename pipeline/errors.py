"""The exception tree of evalstream.

    EvalstreamError
    ├── ConfigError           bad settings or CLI arguments
    │   └── RulesError        an invalid rules file (names the rule and field)
    ├── DecodeError           a message that is not valid JSON or not the contract
    │   └── OversizedError    a message over the size limit
    ├── ScorerError           a scorer failed (wraps the user's exception)
    │   ├── ScorerNotFoundError
    │   ├── ScorerReturnTypeError
    │   ├── ScorerTimeoutError
    │   └── RetryableScorerError   raise it from a scorer to ask for a retry
    ├── StorageError          ClickHouse unreachable or a failed insert
    └── BrokerError           the embedded broker could not start
"""

from __future__ import annotations


class EvalstreamError(Exception):
    """Root of every error evalstream raises on purpose."""


class ConfigError(EvalstreamError):
    pass


class RulesError(ConfigError):
    def __init__(self, message: str, *, rule: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.field = field


class DecodeError(EvalstreamError):
    pass


class OversizedError(DecodeError):
    pass


class ScorerError(EvalstreamError):
    pass


class ScorerNotFoundError(ScorerError):
    pass


class ScorerReturnTypeError(ScorerError):
    pass


class ScorerTimeoutError(ScorerError):
    pass


class RetryableScorerError(ScorerError):
    """Raised by a scorer for a transient failure (rate limit, 5xx): the job is retried."""


class StorageError(EvalstreamError):
    pass


class BrokerError(EvalstreamError):
    pass
