"""Machine (IAM-style) tokens: fetched once, shared, refreshed before they expire.

A :class:`TokenProvider` hands out a bearer token for the process's own
identity. The same provider serves Kafka (SASL OAUTHBEARER, through
:class:`KafkaTokenProvider`) and a step's outgoing HTTP calls::

    bank_token = ClientCredentials.from_env("BANK")   # BANK_TOKEN_URL, BANK_CLIENT_ID, ...

    @service.step(CHARGE)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        token = await bank_token.token()
        response = await call_bank(reserved, authorization=f"Bearer {token}")
        if response.status == 401:
            bank_token.invalidate(token)      # the next attempt fetches a fresh one
            raise BankUnavailable("token refused")   # retried per the step's policy
        ...

Rules: a token is cached and refreshed once its lifetime is 80% spent, by one
fetch that concurrent callers share (its failure too; a token not yet expired
is still handed out while refreshing fails); :meth:`TokenProvider.invalidate` (after
an auth failure) makes the next call fetch anew. An unreachable or failing
token endpoint is retried with backoff, then :class:`TokenUnavailable` names
the endpoint and the last error; a refusal (``invalid_client``,
``unauthorized_client``, ``invalid_grant``...) is :class:`TokenRejected` at
once, which is not retried. Neither message ever holds a secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from aiokafka.abc import AbstractTokenProvider

from saga.errors import SagaError
from saga.resilience.retry import NonRetryableError, RetryPolicy, run_with_retry
from saga.security.redaction import redact

#: Share of a token's lifetime after which it is refreshed.
__all__ = [
    "CachedTokenProvider",
    "ClientCredentials",
    "KafkaTokenProvider",
    "MskIamTokens",
    "TokenProvider",
    "TokenRejected",
    "TokenUnavailable",
    "require_https",
]

REFRESH_AT = 0.8
DEFAULT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=4,
)


class TokenUnavailable(SagaError):
    """The token endpoint could not be reached or kept failing; retried before this."""


class TokenRejected(NonRetryableError):
    """The token endpoint refused the credentials or the grant: retrying will not help."""


class TokenProvider(Protocol):
    async def token(self) -> str: ...

    def invalidate(self, token: str) -> None: ...


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    #: ``time.monotonic()`` after which it is refreshed (80% of its lifetime).
    refresh_at: float
    expires_at: float


class CachedTokenProvider:
    """Caching, single-flight refresh and invalidation around a ``fetch`` function.

    ``fetch`` returns ``(token, lifetime in seconds)``; it runs in a thread.
    """

    def __init__(
        self,
        fetch: Callable[[], tuple[str, float]],
        *,
        name: str,
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.name = name
        self._retry = retry
        self._clock = clock
        self._current: Token | None = None
        self._inflight: asyncio.Future[Token] | None = None
        self.fetches = 0

    async def token(self) -> str:
        current = self._current
        if current is not None and self._clock() < current.refresh_at:
            return current.value
        # One refresh at a time: every caller waits on the same one, success or failure.
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._refresh())
            self._inflight.add_done_callback(self._settled)
        try:
            return (await asyncio.shield(self._inflight)).value
        except Exception:
            if current is not None and self._clock() < current.expires_at:
                return current.value  # refreshing failed, but this one is still valid
            raise

    def _settled(self, done: asyncio.Future[Token]) -> None:
        if self._inflight is done:
            self._inflight = None
        if not done.cancelled():
            done.exception()  # retrieved: failures are raised to the callers

    def invalidate(self, token: str) -> None:
        """``token`` was refused downstream: fetch a new one next time (if it is current)."""
        if self._current is not None and self._current.value == token:
            self._current = None

    async def _refresh(self) -> Token:
        async def attempt(number: int) -> tuple[str, float]:
            self.fetches += 1
            return await asyncio.to_thread(self._fetch)

        try:
            value, lifetime = await run_with_retry(self._retry, attempt)
        except TokenRejected:
            raise
        except Exception as exc:
            raise TokenUnavailable(
                redact(
                    f"no token from {self.name} after {self._retry.maximum_attempts} "
                    f"attempt(s): {type(exc).__name__}: {exc}"
                )
            ) from exc
        now = self._clock()
        self._current = Token(value, now + lifetime * REFRESH_AT, now + lifetime)
        return self._current


class ClientCredentials(CachedTokenProvider):
    """OAuth 2.0 client-credentials grant at any token endpoint."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        audience: str | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        require_https(token_url, "token URL")
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        }
        if scope:
            form["scope"] = scope
        if audience:
            form["audience"] = audience
        self.token_url = token_url
        super().__init__(
            lambda: _client_credentials(token_url, form, timeout_s),
            name=f"token endpoint {token_url}",
            retry=retry,
            clock=clock,
        )

    @classmethod
    def from_env(cls, prefix: str, **kwargs: Any) -> ClientCredentials:
        """From ``<PREFIX>_TOKEN_URL``, ``_CLIENT_ID``, ``_CLIENT_SECRET``, ``_SCOPE``."""
        env = os.environ
        return cls(
            env[f"{prefix}_TOKEN_URL"],
            env[f"{prefix}_CLIENT_ID"],
            env[f"{prefix}_CLIENT_SECRET"],
            scope=env.get(f"{prefix}_SCOPE"),
            **kwargs,
        )


def require_https(url: str, what: str) -> None:
    """Credentials travel only over TLS; plain http only to this machine (tests, sidecars)."""
    parts = urllib.parse.urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")
    if not (parts.scheme == "https" and parts.hostname) and not local:
        raise ValueError(f"{what} must be https:// (http:// only to localhost): {url!r}")


#: OAuth 2.0 error codes that mean "these credentials or this grant will not work".
_REFUSALS = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_grant", "invalid_scope", "access_denied"}
)


class OAuthRefusal(SagaError):
    """The token endpoint answered with an OAuth 2.0 error that retrying will not change."""

    def __init__(self, url: str, code: str, status: int) -> None:
        super().__init__(f"{url} refused: {code} (HTTP {status})")
        self.code = code


def token_request(url: str, form: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """POST an OAuth 2.0 token request; the answer with its ``access_token``.

    :class:`OAuthRefusal` for a refusal (``invalid_grant``, ``invalid_client``, ...);
    ``OSError`` for anything worth retrying (network, 5xx, other errors).
    """
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 (checked)
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        code = _oauth_error(error)
        if error.code in (400, 401, 403) and code in _REFUSALS:
            raise OAuthRefusal(url, code, error.code) from None
        raise OSError(f"HTTP {error.code} from {url}" + (f": {code}" if code else "")) from None
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise ValueError(f"{url} answered without an access_token")
    return dict(answer)


def _client_credentials(url: str, form: dict[str, str], timeout_s: float) -> tuple[str, float]:
    try:
        answer = token_request(url, form, timeout_s)
    except OAuthRefusal as refused:
        raise TokenRejected(str(refused)) from None
    return answer["access_token"], float(answer.get("expires_in", 300))


def _oauth_error(error: urllib.error.HTTPError) -> str | None:
    try:
        found = json.loads(error.read() or b"{}").get("error")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


class KafkaTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """A :class:`TokenProvider` as aiokafka's SASL OAUTHBEARER token source."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    async def token(self) -> str:
        return await self.provider.token()


class MskIamTokens(CachedTokenProvider):
    """AWS MSK IAM tokens (the ``aws`` extra: aws-msk-iam-sasl-signer-python)."""

    def __init__(self, region: str, **kwargs: Any) -> None:
        def fetch() -> tuple[str, float]:
            try:
                from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
            except ImportError:
                raise TokenRejected(
                    "AWS MSK IAM needs the 'aws' extra: pip install 'kafka-saga[aws]'"
                ) from None
            token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
            return str(token), max(1.0, expiry_ms / 1000 - time.time())

        super().__init__(fetch, name=f"AWS MSK IAM ({region})", **kwargs)
