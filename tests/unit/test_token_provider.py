"""OAUTHBEARER tokens are fetched once, shared, and refreshed before they expire."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from saga.kafka_config import ClientCredentialsTokenProvider
from saga.settings import Settings
from tests.http_helpers import QuietHandler, serving


class TokenEndpoint:
    def __init__(self) -> None:
        self.requests: list[dict[str, list[str]]] = []
        self.expires_in = 3600.0


@pytest.fixture
def endpoint() -> Iterator[tuple[TokenEndpoint, str]]:
    state = TokenEndpoint()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            state.requests.append(urllib.parse.parse_qs(body))
            answer = json.dumps(
                {"access_token": f"token-{len(state.requests)}", "expires_in": state.expires_in}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    with serving(Handler) as port:
        yield state, f"http://127.0.0.1:{port}/token"


def provider(url: str) -> ClientCredentialsTokenProvider:
    return ClientCredentialsTokenProvider(
        Settings(
            security_protocol="SASL_SSL",
            sasl_mechanism="OAUTHBEARER",
            sasl_oauth_token_url=url,
            sasl_oauth_client_id="svc",
            sasl_oauth_client_secret=SecretStr("s3cret"),
            sasl_oauth_scope="kafka",
        )
    )


async def test_token_is_fetched_once_with_client_credentials_and_cached(
    endpoint: tuple[TokenEndpoint, str],
) -> None:
    state, url = endpoint
    tokens = provider(url)
    got = await asyncio.gather(*(tokens.token() for _ in range(5)))
    assert got == ["token-1"] * 5
    assert len(state.requests) == 1
    assert state.requests[0] == {
        "grant_type": ["client_credentials"],
        "client_id": ["svc"],
        "client_secret": ["s3cret"],
        "scope": ["kafka"],
    }


async def test_token_near_expiry_is_refreshed(endpoint: tuple[TokenEndpoint, str]) -> None:
    state, url = endpoint
    state.expires_in = 0.05  # refreshed after 80% of its life
    tokens = provider(url)
    assert await tokens.token() == "token-1"
    await asyncio.sleep(0.06)
    assert await tokens.token() == "token-2"
