"""Settings come from SAGA_* variables, keep secrets secret and refuse impossible setups."""

from __future__ import annotations

import ssl
from datetime import timedelta

import pytest
from pydantic import ValidationError

from saga.kafka.config import client_kwargs
from saga.outbox.retention import Retention
from saga.security.tokens import ClientCredentials, KafkaTokenProvider
from saga.settings import Settings


def test_environment_variables_with_the_saga_prefix_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("SAGA_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("SAGA_ENABLE_IDEMPOTENCE", "false")
    monkeypatch.setenv("SAGA_DATABASE_URL", "postgresql://u:hunter2@db/saga")
    monkeypatch.setenv("SAGA_OTLP_ENDPOINT", "http://jaeger:4318")
    monkeypatch.setenv("BOOTSTRAP_SERVERS", "ignored:1")
    settings = Settings()
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.topic_partitions == 12
    assert settings.enable_idempotence is False
    assert settings.otlp_endpoint == "http://jaeger:4318"
    assert settings.database_url.get_secret_value() == "postgresql://u:hunter2@db/saga"


def test_defaults_are_safe_for_production() -> None:
    settings = Settings()
    assert settings.enable_idempotence is True
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.compression_type == "gzip"


def test_retention_keeps_a_week_of_inbox_by_default_and_zero_interval_turns_pruning_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Sent outbox rows are not kept by default: deleted once the broker has them.
    default = Retention.of(Settings())
    assert default == Retention(
        inbox=timedelta(days=7), outbox=timedelta(0), every=timedelta(minutes=10)
    )
    monkeypatch.setenv("SAGA_INBOX_RETENTION_HOURS", "720")
    monkeypatch.setenv("SAGA_OUTBOX_RETENTION_HOURS", "0.5")
    monkeypatch.setenv("SAGA_PRUNE_INTERVAL_MS", "60000")
    assert Retention.of(Settings()) == Retention(
        inbox=timedelta(days=30), outbox=timedelta(minutes=30), every=timedelta(minutes=1)
    )
    monkeypatch.setenv("SAGA_PRUNE_INTERVAL_MS", "0")
    assert Retention.of(Settings()) is None


def test_secrets_never_show_in_repr() -> None:
    settings = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="hunter2",  # type: ignore[arg-type]
        database_url="postgresql://u:pw-in-url@db/saga",  # type: ignore[arg-type]
    )
    assert "hunter2" not in repr(settings)
    assert "pw-in-url" not in repr(settings)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs SAGA_SASL_MECHANISM"),
        ({"sasl_mechanism": "PLAIN"}, "use SASL_SSL"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "SAGA_SASL_USERNAME"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}, "TOKEN_URL"),
        ({"ssl_certfile": "/c.pem"}, "go together"),
        ({"heartbeat_interval_ms": 20_000}, "below SAGA_SESSION_TIMEOUT_MS"),
    ],
)
def test_inconsistent_security_is_refused_with_the_variable_to_set(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_scram_over_tls_reaches_the_client() -> None:
    settings = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc",
        sasl_password="pw",  # type: ignore[arg-type]
    )
    kwargs = client_kwargs(settings, "svc-1")
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("svc", "pw")
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].check_hostname is True


def test_oauthbearer_gets_a_token_provider() -> None:
    settings = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth_token_url="http://127.0.0.1:1/token",
        sasl_oauth_client_id="svc",
        sasl_oauth_client_secret="s",  # type: ignore[arg-type]
    )
    kwargs = client_kwargs(settings, "svc-1")
    assert isinstance(kwargs["sasl_oauth_token_provider"], KafkaTokenProvider)
    assert isinstance(kwargs["sasl_oauth_token_provider"].provider, ClientCredentials)
    assert "sasl_plain_password" not in kwargs


def test_plaintext_has_no_tls_or_sasl() -> None:
    kwargs = client_kwargs(Settings(), "c")
    assert "ssl_context" not in kwargs
    assert "sasl_mechanism" not in kwargs
