"""Kafka TLS and SASL from plain settings, for every client the pipeline makes (Faust, aiokafka).

EVALSTREAM_KAFKA_SECURITY_PROTOCOL    PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
EVALSTREAM_KAFKA_SASL_MECHANISM       PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512
EVALSTREAM_KAFKA_SASL_USERNAME / _PASSWORD
EVALSTREAM_KAFKA_SSL_CAFILE           the CA that signed the brokers' certificates (else the system's)
EVALSTREAM_KAFKA_SSL_CERTFILE / _KEYFILE   a client certificate, for brokers that require mutual TLS
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

from pipeline.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if "SSL" not in settings.kafka_security_protocol:
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = (settings.kafka_sasl_password.get_secret_value()
                                          if settings.kafka_sasl_password else None)
    return options


def faust_credentials(settings: Settings) -> Any:
    """`broker_credentials` for the Faust app (None for PLAINTEXT)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
        ssl_context=context, mechanism=settings.kafka_sasl_mechanism)


@functools.cache
def env_options() -> dict[str, Any]:
    """`aiokafka_options` for the settings in the environment, for clients made far from a Settings object."""
    return aiokafka_options(Settings())
