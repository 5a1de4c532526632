"""Kafka TLS and SASL: the one place their settings become client options, for the SDK and the workers.

EVALSTREAM_KAFKA_SECURITY_PROTOCOL    PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
EVALSTREAM_KAFKA_SASL_MECHANISM       PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512
EVALSTREAM_KAFKA_SASL_USERNAME / _PASSWORD
EVALSTREAM_KAFKA_SSL_CAFILE           the CA that signed the brokers' certificates (else the system's)
EVALSTREAM_KAFKA_SSL_CERTFILE / _KEYFILE   a client certificate, for brokers that require mutual TLS

The variables are read where all configuration is read: `settings.py` for the pipeline, `sdk/config.py`
for the SDK. Both pass the values to `client_options`. A leaf: it imports only `pipeline.errors`, so
the SDK imports it without the pipeline's dependencies (Faust credentials are built in `worker/`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def client_options(protocol: str | None = None, mechanism: str | None = None, username: str | None = None,
                   password: str | None = None, cafile: str | None = None, certfile: str | None = None,
                   keyfile: str | None = None) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient ({} for PLAINTEXT).
    A bad value raises ConfigError naming its variable."""
    protocol = (protocol or "PLAINTEXT").strip().upper()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"EVALSTREAM_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if "SSL" in protocol:
        import ssl

        try:
            context = ssl.create_default_context(cafile=cafile or None)
            if certfile:
                context.load_cert_chain(certfile, keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"EVALSTREAM_KAFKA_SSL_*: {exc}") from None
        options["ssl_context"] = context
    if protocol.startswith("SASL"):
        mechanism = (mechanism or "PLAIN").strip().upper()
        if mechanism not in MECHANISMS:
            raise ConfigError(f"EVALSTREAM_KAFKA_SASL_MECHANISM={mechanism!r}: expected one of {', '.join(MECHANISMS)}")
        if not username or not password:
            raise ConfigError(f"EVALSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs EVALSTREAM_KAFKA_SASL_USERNAME "
                              "and EVALSTREAM_KAFKA_SASL_PASSWORD")
        options.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
    return options


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """`client_options` of the pipeline's settings, for every aiokafka client a worker or command makes."""
    password = settings.kafka_sasl_password
    return client_options(settings.kafka_security_protocol, settings.kafka_sasl_mechanism,
                          settings.kafka_sasl_username, password.get_secret_value() if password else None,
                          settings.kafka_ssl_cafile, settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
