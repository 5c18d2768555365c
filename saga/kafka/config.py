"""Settings -> aiokafka client arguments (connection and security), in one place."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from saga.security.tokens import ClientCredentials, KafkaTokenProvider, MskIamTokens
from saga.settings import Settings


def client_kwargs(settings: Settings, client_id: str) -> dict[str, Any]:
    """Arguments every aiokafka client (producer, consumer, admin) needs."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.security_protocol in {"SSL", "SASL_SSL"}:
        kwargs["ssl_context"] = ssl_context(settings)
    if settings.sasl_mechanism is not None:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        if settings.sasl_mechanism == "OAUTHBEARER":
            kwargs["sasl_oauth_token_provider"] = oauth_tokens(settings)
        else:
            assert settings.sasl_password is not None  # checked by Settings
            kwargs["sasl_plain_username"] = settings.sasl_username
            kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS context trusting ``ssl_cafile`` (or the system store), with optional mTLS."""
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
        password=(
            settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
        ),
    )
    context.check_hostname = settings.ssl_check_hostname
    return context


def oauth_tokens(settings: Settings) -> KafkaTokenProvider:
    """The SASL OAUTHBEARER token source ``settings`` describe."""
    if settings.sasl_oauth_provider == "aws_msk_iam":
        assert settings.aws_region  # checked by Settings
        return KafkaTokenProvider(MskIamTokens(settings.aws_region))
    # Settings guarantees all three for the client-credentials grant.
    assert settings.sasl_oauth_token_url
    assert settings.sasl_oauth_client_id
    assert settings.sasl_oauth_client_secret is not None
    return KafkaTokenProvider(
        ClientCredentials(
            settings.sasl_oauth_token_url,
            settings.sasl_oauth_client_id,
            settings.sasl_oauth_client_secret.get_secret_value(),
            scope=settings.sasl_oauth_scope,
        )
    )
