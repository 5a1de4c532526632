"""pipeline/kafka_security.py and topic configs: TLS and SASL from plain settings, parsed once for every client."""

from __future__ import annotations

import ssl

import faust
import pytest
from pydantic import ValidationError

from pipeline import topics
from pipeline.admin import topic_configs
from pipeline.kafka_security import aiokafka_options
from pipeline.settings import Settings
from pipeline.worker.transport import faust_credentials


def test_plaintext_adds_nothing() -> None:
    settings = Settings()
    assert aiokafka_options(settings) == {} and faust_credentials(settings) is None


def test_sasl_over_tls_gives_every_client_the_same_credentials() -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_username="pipeline", kafka_sasl_password="s3cret")
    options = aiokafka_options(settings)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("pipeline", "s3cret")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials) and credentials.protocol.value == "SASL_SSL"
    assert "s3cret" not in repr(settings)  # a SecretStr: never printed


def test_tls_alone_and_plain_sasl() -> None:
    assert set(aiokafka_options(Settings(kafka_security_protocol="SSL"))) == {"security_protocol", "ssl_context"}
    assert isinstance(faust_credentials(Settings(kafka_security_protocol="SSL")), faust.SSLCredentials)
    plain = aiokafka_options(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u",
                                      kafka_sasl_password="p"))
    assert "ssl_context" not in plain and plain["sasl_mechanism"] == "PLAIN"


@pytest.mark.parametrize("fields, message", [
    ({"kafka_security_protocol": "SASL_SSL"}, "needs EVALSTREAM_KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "TLS"}, "PLAINTEXT"),
    ({"roles": "scorer,judge"}, "unknown role"),
])
def test_bad_settings_are_refused_with_the_variable_named(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)


def test_topic_configs_compact_state_and_keep_dead_letters_longer() -> None:
    assert topic_configs(topics.SCORERS, 72) == {"cleanup.policy": "compact"}
    assert topic_configs(topics.SPANS, 72) == {"retention.ms": str(72 * 3600 * 1000)}
    assert topic_configs(topics.DEAD_LETTERS, 72) == {"retention.ms": str(4 * 72 * 3600 * 1000)}
    assert topic_configs(topics.SPANS, None) == {}


def test_the_sdk_reads_the_same_variables_and_refuses_half_a_configuration() -> None:
    from pipeline.errors import ConfigError
    from pipeline.sdk.config import SDKConfig

    env = {"EVALSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "EVALSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
           "EVALSTREAM_KAFKA_SASL_USERNAME": "svc", "EVALSTREAM_KAFKA_SASL_PASSWORD": "pw"}
    options = SDKConfig.resolve(env=env).kafka_options
    assert options is not None and options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert SDKConfig.resolve(env={}).kafka_options == {}
    assert SDKConfig.resolve(env=env, kafka_options={"security_protocol": "SSL"}).kafka_options == {
        "security_protocol": "SSL"}  # an argument wins over the environment
    with pytest.raises(ConfigError, match="needs EVALSTREAM_KAFKA_SASL_USERNAME"):
        SDKConfig.resolve(env={"EVALSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
