"""SDK configuration, resolved once when a Tracer is built: argument > `EVALSTREAM_*` env var > default.

Every environment variable the SDK reads is listed in `ENV_VARS`. Bad values fail at construction
with a `ConfigError` that names the variable; after that the SDK never raises into user code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError
from pipeline.kafka_security import client_options

ENV_VARS = {
    "EVALSTREAM_MONITORING": "false turns tracing into a no-op",
    "EVALSTREAM_EVALUATIONS": "false drops async_evaluate requests",
    "EVALSTREAM_KAFKA_BOOTSTRAP": "Kafka bootstrap servers; without it the tracer is a no-op",
    "EVALSTREAM_PROJECT": "project name stamped on every span",
    "EVALSTREAM_SERVICE": "service name stamped on every span",
    "EVALSTREAM_SDK_MAX_QUEUE_SIZE": "spans held in memory before new ones are dropped",
    "EVALSTREAM_SDK_FLUSH_INTERVAL_S": "how often the background thread publishes",
    "EVALSTREAM_SDK_MAX_FIELD_BYTES": "cap on each captured input, output and attribute",
    "EVALSTREAM_SDK_CAPTURE_IO": "false stops capturing function inputs and outputs",
    "EVALSTREAM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL",
    "EVALSTREAM_KAFKA_SASL_MECHANISM": "PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512",
    "EVALSTREAM_KAFKA_SASL_USERNAME": "SASL user",
    "EVALSTREAM_KAFKA_SASL_PASSWORD": "SASL password",
    "EVALSTREAM_KAFKA_SSL_CAFILE": "CA of the brokers' certificates (default: the system's)",
    "EVALSTREAM_KAFKA_SSL_CERTFILE": "client certificate, for mutual TLS",
    "EVALSTREAM_KAFKA_SSL_KEYFILE": "client key, for mutual TLS",
}


def kafka_security(env: Mapping[str, str]) -> dict[str, Any]:
    """aiokafka keyword arguments for TLS / SASL, from the same variables the pipeline's workers read."""
    return client_options(env.get("EVALSTREAM_KAFKA_SECURITY_PROTOCOL"), env.get("EVALSTREAM_KAFKA_SASL_MECHANISM"),
                          env.get("EVALSTREAM_KAFKA_SASL_USERNAME"), env.get("EVALSTREAM_KAFKA_SASL_PASSWORD"),
                          env.get("EVALSTREAM_KAFKA_SSL_CAFILE"), env.get("EVALSTREAM_KAFKA_SSL_CERTFILE"),
                          env.get("EVALSTREAM_KAFKA_SSL_KEYFILE"))


_FALSE = {"0", "false", "no", "off"}
_TRUE = {"1", "true", "yes", "on"}

Redactor = Callable[[Any], Any]


def _env_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def _env_number(env: Mapping[str, str], name: str, kind: type, minimum: float) -> Any:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a {kind.__name__}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def _pick(argument: Any, from_env: Any, default: Any) -> Any:
    if argument is not None:
        return argument
    return from_env if from_env is not None else default


@dataclass(frozen=True, slots=True)
class SDKConfig:
    project: str = "default"
    service: str | None = None
    bootstrap_servers: str | None = None
    monitoring: bool = True
    evaluations: bool = True
    max_queue_size: int = 100_000
    flush_interval_s: float = 0.1
    max_field_bytes: int = 32 * 1024
    capture_io: bool = True
    redact: Redactor | None = None
    kafka_options: Mapping[str, Any] | None = None  # extra AIOKafkaProducer arguments (TLS, SASL)

    @classmethod
    def resolve(cls, *, project: str | None = None, service: str | None = None,
                bootstrap_servers: str | None = None, monitoring: bool | None = None,
                evaluations: bool | None = None, max_queue_size: int | None = None,
                flush_interval_s: float | None = None, max_field_bytes: int | None = None,
                capture_io: bool | None = None, redact: Redactor | None = None,
                kafka_options: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> SDKConfig:
        env = os.environ if env is None else env
        config = cls(
            project=_pick(project, env.get("EVALSTREAM_PROJECT") or None, "default"),
            service=_pick(service, env.get("EVALSTREAM_SERVICE") or None, None),
            bootstrap_servers=_pick(bootstrap_servers, env.get("EVALSTREAM_KAFKA_BOOTSTRAP") or None, None),
            monitoring=_pick(monitoring, _env_bool(env, "EVALSTREAM_MONITORING"), True),
            evaluations=_pick(evaluations, _env_bool(env, "EVALSTREAM_EVALUATIONS"), True),
            max_queue_size=_pick(max_queue_size, _env_number(env, "EVALSTREAM_SDK_MAX_QUEUE_SIZE", int, 1), 100_000),
            flush_interval_s=_pick(flush_interval_s, _env_number(env, "EVALSTREAM_SDK_FLUSH_INTERVAL_S", float, 0.001),
                                   0.1),
            max_field_bytes=_pick(max_field_bytes, _env_number(env, "EVALSTREAM_SDK_MAX_FIELD_BYTES", int, 64),
                                  32 * 1024),
            capture_io=_pick(capture_io, _env_bool(env, "EVALSTREAM_SDK_CAPTURE_IO"), True),
            redact=redact,
            kafka_options=kafka_options if kafka_options is not None else kafka_security(env),
        )
        config.validate()
        return config

    def validate(self) -> None:
        if not self.project:
            raise ConfigError("project must not be empty")
        if self.max_queue_size < 1:
            raise ConfigError(f"max_queue_size={self.max_queue_size}: must be at least 1")
        if self.flush_interval_s <= 0:
            raise ConfigError(f"flush_interval_s={self.flush_interval_s}: must be positive")
        if self.max_field_bytes < 64:
            raise ConfigError(f"max_field_bytes={self.max_field_bytes}: must be at least 64")
        if self.redact is not None and not callable(self.redact):
            raise ConfigError("redact must be a callable taking a captured value and returning it redacted")
