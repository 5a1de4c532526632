"""The exception tree of evalstream.

    EvalstreamError
    ├── ConfigError           bad settings or CLI arguments
    │   └── RulesError        an invalid rules file (names the rule and field)
    ├── DecodeError           a message that is not valid JSON or not the contract
    │   ├── OversizedError    a message over the size limit
    │   └── OtlpDecodeError   an OTLP request that cannot be accepted (names the field)
    ├── ScorerError           a scorer failed (wraps the user's exception)
    │   ├── ScorerNotFoundError
    │   ├── ScorerReturnTypeError
    │   ├── ScorerTimeoutError
    │   ├── ScorerSubjectError     it does not score this subject (an uploaded trace scorer given a span)
    │   └── RetryableScorerError   raise it from a scorer to ask for a retry
    ├── StorageError          ClickHouse unreachable or a failed insert
    │   └── StorageDataError  rows whose values ClickHouse cannot store (split off and dead-lettered, not retried)
    ├── BrokerError           the embedded broker could not start
    └── PublishError          the broker did not acknowledge messages we had to deliver
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


class OtlpDecodeError(DecodeError):
    """`location` is where in the request (e.g. `resourceSpans[0].scopeSpans[0].spans[3]`), `problem`
    what is wrong there, and `field` the offending field's name when there is one."""

    def __init__(self, location: str, problem: str, field: str | None = None) -> None:
        super().__init__(f"{location}: {problem}" if location else problem)
        self.location = location
        self.problem = problem
        self.field = field

    @property
    def field_path(self) -> str:
        return ".".join(part for part in (self.location, self.field) if part)


class ScorerError(EvalstreamError):
    pass


class ScorerNotFoundError(ScorerError):
    pass


class ScorerReturnTypeError(ScorerError):
    pass


class ScorerTimeoutError(ScorerError):
    pass


class ScorerSubjectError(ScorerError):
    """The scorer does not declare the subject it was given (`Scorer.subjects`): not retried."""


class RetryableScorerError(ScorerError):
    """Raised by a scorer for a transient failure (rate limit, 5xx): the job is retried."""


class StorageError(EvalstreamError):
    pass


class StorageDataError(StorageError):
    """An insert into `table` failed for the rows' values (out of range, wrong type), not for the store:
    the same rows would fail again, so the sink splits the batch to find them instead of retrying it."""

    def __init__(self, table: str, cause: BaseException) -> None:
        super().__init__(f"{table}: {type(cause).__name__}: {cause}")
        self.table = table
        self.cause = cause


class TraceNotLoadedError(RetryableScorerError, LookupError):
    """A session scorer could not open a turn's trace: not stored yet (the sink lags) or storage not
    reachable. Transient: the job is retried, and dead-lettered if it still fails."""


class BrokerError(EvalstreamError):
    pass


class PublishError(EvalstreamError):
    pass
