"""Settings -> aiokafka client arguments (connection and security), in one place."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.parse
import urllib.request
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

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
            kwargs["sasl_oauth_token_provider"] = ClientCredentialsTokenProvider(settings)
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


class ClientCredentialsTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """OAUTHBEARER tokens from an OAuth 2.0 client-credentials endpoint.

    Caches the token and fetches a new one once 80% of its lifetime has passed,
    so connections made near expiry never present a stale token. Concurrent
    callers share one fetch.
    """

    #: Fraction of a token's lifetime after which it is refreshed.
    REFRESH_AT = 0.8

    def __init__(self, settings: Settings, *, timeout_s: float = 10.0) -> None:
        # Settings guarantees all three for OAUTHBEARER.
        assert settings.sasl_oauth_token_url
        assert settings.sasl_oauth_client_id
        assert settings.sasl_oauth_client_secret is not None
        self._url = settings.sasl_oauth_token_url
        self._form = {
            "grant_type": "client_credentials",
            "client_id": settings.sasl_oauth_client_id,
            "client_secret": settings.sasl_oauth_client_secret.get_secret_value(),
        }
        if settings.sasl_oauth_scope:
            self._form["scope"] = settings.sasl_oauth_scope
        self._timeout_s = timeout_s
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or time.monotonic() >= self._refresh_at:
                token, lifetime_s = await asyncio.to_thread(self._fetch)
                self._token = token
                self._refresh_at = time.monotonic() + lifetime_s * self.REFRESH_AT
            return self._token

    def _fetch(self) -> tuple[str, float]:
        body = urllib.parse.urlencode(self._form).encode()
        request = urllib.request.Request(self._url, data=body, method="POST")  # noqa: S310
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
            answer = json.loads(response.read())
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise RuntimeError(f"token endpoint {self._url} returned no access_token")
        return token, float(answer.get("expires_in", 300))
