"""Machine tokens from a real local OAuth 2.0 token endpoint: cached, shared, refreshed."""

from __future__ import annotations

import asyncio
import sys
import types
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr

from saga.dev.processes import free_port
from saga.kafka.config import client_kwargs
from saga.resilience.retry import RetryPolicy
from saga.security.tokens import (
    ClientCredentials,
    KafkaTokenProvider,
    MskIamTokens,
    TokenRejected,
    TokenUnavailable,
)
from saga.settings import Settings
from tests.http_helpers import QuietHandler, serving

QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=10), maximum_attempts=3, jitter=0)


class TokenEndpoint:
    def __init__(self) -> None:
        self.requests: list[dict[str, list[str]]] = []
        self.expires_in = 3600.0
        #: Answers to give first, as (HTTP status, OAuth error code).
        self.failures: list[tuple[int, str]] = []


@pytest.fixture
def endpoint() -> Iterator[tuple[TokenEndpoint, str]]:
    state = TokenEndpoint()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            state.requests.append(urllib.parse.parse_qs(body))
            if state.failures:
                status, code = state.failures.pop(0)
                self.send_json(status, {"error": code})
            else:
                token = {
                    "access_token": f"token-{len(state.requests)}",
                    "expires_in": state.expires_in,
                }
                self.send_json(200, token)

    with serving(Handler) as port:
        yield state, f"http://127.0.0.1:{port}/token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def provider(url: str, clock: Clock | None = None) -> ClientCredentials:
    return ClientCredentials(
        url, "svc", "s3cret", scope="kafka", retry=QUICK, clock=clock or Clock()
    )


async def test_one_fetch_with_client_credentials_shared_by_concurrent_callers(
    endpoint: tuple[TokenEndpoint, str],
) -> None:
    state, url = endpoint
    tokens = provider(url)
    got = await asyncio.gather(*(tokens.token() for _ in range(5)))
    assert got == ["token-1"] * 5
    assert state.requests == [
        {
            "grant_type": ["client_credentials"],
            "client_id": ["svc"],
            "client_secret": ["s3cret"],
            "scope": ["kafka"],
        }
    ]


async def test_a_token_is_refreshed_once_80_percent_of_its_life_has_passed(
    endpoint: tuple[TokenEndpoint, str],
) -> None:
    state, url = endpoint
    state.expires_in = 100
    clock = Clock()
    tokens = provider(url, clock)
    assert await tokens.token() == "token-1"
    clock.now += 79
    assert await tokens.token() == "token-1", "still fresh"
    clock.now += 2  # 81 s of 100: refreshed before it expires
    assert list(await asyncio.gather(tokens.token(), tokens.token())) == ["token-2", "token-2"]
    assert len(state.requests) == 2


async def test_a_token_refused_downstream_is_fetched_anew(
    endpoint: tuple[TokenEndpoint, str],
) -> None:
    _, url = endpoint
    tokens = provider(url)
    first = await tokens.token()
    tokens.invalidate("some older token")
    assert await tokens.token() == first, "only the current token is dropped"
    tokens.invalidate(first)
    assert await tokens.token() == "token-2"


async def test_an_endpoint_that_fails_for_a_while_is_retried(
    endpoint: tuple[TokenEndpoint, str],
) -> None:
    state, url = endpoint
    state.failures = [(503, "temporarily_unavailable"), (500, "server_error")]
    assert await provider(url).token() == "token-3"
    assert len(state.requests) == 3


async def test_refused_credentials_fail_at_once_and_are_not_retried(
    endpoint: tuple[TokenEndpoint, str],
) -> None:
    state, url = endpoint
    state.failures = [(401, "invalid_client")]
    with pytest.raises(TokenRejected, match="invalid_client") as refused:
        await provider(url).token()
    assert len(state.requests) == 1
    assert "s3cret" not in str(refused.value)


async def test_an_endpoint_that_is_down_is_retried_then_fails_clearly() -> None:
    url = f"http://127.0.0.1:{free_port()}/token"  # nothing listens
    tokens = provider(url)
    with pytest.raises(TokenUnavailable) as down:
        await tokens.token()
    message = str(down.value)
    assert url in message and "after 3 attempt(s)" in message
    assert "s3cret" not in message
    assert tokens.fetches == 3


async def test_kafka_oauthbearer_uses_the_same_provider(
    endpoint: tuple[TokenEndpoint, str],
) -> None:
    _, url = endpoint
    settings = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth_token_url=url,
        sasl_oauth_client_id="svc",
        sasl_oauth_client_secret=SecretStr("s3cret"),
    )
    kafka = client_kwargs(settings, "c")["sasl_oauth_token_provider"]
    assert isinstance(kafka, KafkaTokenProvider)
    assert await kafka.token() == "token-1"


async def test_aws_msk_iam_tokens_come_from_the_signer(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class FakeSigner:
        @staticmethod
        def generate_auth_token(region: str) -> tuple[str, int]:
            import time

            calls.append(region)
            return f"msk-{region}", int((time.time() + 900) * 1000)

    module = types.ModuleType("aws_msk_iam_sasl_signer")
    module.MSKAuthTokenProvider = FakeSigner  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aws_msk_iam_sasl_signer", module)
    tokens = MskIamTokens("eu-west-1")
    assert await tokens.token() == await tokens.token() == "msk-eu-west-1"
    assert calls == ["eu-west-1"]
    with pytest.raises(ValueError, match="SAGA_AWS_REGION"):
        Settings(
            security_protocol="SASL_SSL",
            sasl_mechanism="OAUTHBEARER",
            sasl_oauth_provider="aws_msk_iam",
        )


async def test_a_failing_refresh_is_shared_and_a_still_valid_token_is_kept(
    endpoint: tuple[TokenEndpoint, str],
) -> None:
    state, url = endpoint
    state.expires_in = 100
    clock = Clock()
    tokens = provider(url, clock)
    assert await tokens.token() == "token-1"
    clock.now += 90  # due for refresh, not yet expired
    state.failures = [(503, "temporarily_unavailable")] * 3
    got = await asyncio.gather(*(tokens.token() for _ in range(5)))
    assert got == ["token-1"] * 5, "the current token is still good for 10 s"
    assert tokens.fetches == 1 + 3, "one retry cycle shared by the five callers"
    clock.now += 20  # expired now, and the endpoint is still down
    state.failures = [(503, "temporarily_unavailable")] * 3
    with pytest.raises(TokenUnavailable):
        await tokens.token()


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://idp.example/token", True),
        ("http://127.0.0.1:9000/token", True),
        ("http://localhost/token", True),
        ("http://idp.example/token", False),  # a secret in clear text over the network
        ("ftp://idp.example/token", False),
        ("https:///token", False),
    ],
)
def test_credentials_go_only_over_tls_or_to_this_machine(url: str, allowed: bool) -> None:
    if allowed:
        ClientCredentials(url, "id", "secret")
    else:
        with pytest.raises(ValueError, match="must be https://"):
            ClientCredentials(url, "id", "secret")
