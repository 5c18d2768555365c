"""Bearer tokens: JWTs verified against the provider's JWKS (signature, expiry, issuer,
audience), static development tokens, roles, and closed when nothing is configured."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from saga.errors import ConfigurationError
from saga.participant.service import Service
from saga.security.auth import (
    Principal,
    StaticTokens,
    Unauthenticated,
    authenticator,
    roles_in,
)
from saga.settings import Settings
from tests.http_helpers import QuietHandler, serving

ISSUER = "https://idp.example.test/"
AUDIENCE = "saga-api"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwks() -> dict[str, Any]:
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    ec_jwk = json.loads(ECAlgorithm.to_jwk(EC_KEY.public_key()))
    return {
        "keys": [
            {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
            {**ec_jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"},
        ]
    }


class Jwks(QuietHandler):
    def do_GET(self) -> None:
        self.send_json(200, _jwks())


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    with serving(Jwks) as port:
        yield f"http://127.0.0.1:{port}/jwks.json"


def token(key: Any = RSA_KEY, kid: str = "rsa-1", algorithm: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "roles": ["approver"],
        **claims,
    }
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


def settings(jwks_url: str, **more: Any) -> Settings:
    return Settings(auth_jwks_url=jwks_url, auth_issuer=ISSUER, auth_audience=AUDIENCE, **more)


async def test_a_valid_jwt_names_its_subject_and_roles_rs256_and_es256(jwks_url: str) -> None:
    auth = authenticator(settings(jwks_url))
    who = await auth.principal(f"Bearer {token()}")
    assert who == Principal("alice", frozenset({"approver"}))
    assert who.can("approver") and who.can("viewer") and not who.can("operator")
    ec_token = token(EC_KEY, "ec-1", "ES256", sub="bob", roles="viewer operator")
    assert await auth.principal(f"Bearer {ec_token}") == Principal(
        "bob", frozenset({"viewer", "operator"})
    )


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (lambda: token(exp=int(time.time()) - 120), "expired"),
        (lambda: token(iss="https://elsewhere.test/"), "issuer"),
        (lambda: token(aud="another-api"), "audience"),
        (lambda: token(OTHER_KEY), "signature"),
        (lambda: token(OTHER_KEY, kid="rsa-9"), "does not list"),
        (lambda: token(sub=None), "'sub'"),
        (
            lambda: jwt.encode({"sub": "x"}, "a-shared-secret-of-32-bytes-long", "HS256"),
            "does not list",
        ),
        (lambda: token(OTHER_KEY, kid="rsa-1", algorithm="RS512"), "not valid"),
        (lambda: "not-a-jwt", "not valid"),
        # An EC algorithm naming the RSA key of the JWKS (anyone can read it): a 401, no 500.
        (lambda: token(EC_KEY, kid="rsa-1", algorithm="ES256"), "does not fit its key"),
    ],
)
async def test_a_jwt_that_does_not_verify_is_unauthenticated_saying_why(
    jwks_url: str, bad: Any, why: str
) -> None:
    auth = authenticator(settings(jwks_url))
    bad_token = bad()
    with pytest.raises(Unauthenticated, match=why) as refused:
        await auth.principal(f"Bearer {bad_token}")
    assert bad_token not in str(refused.value), "never echo the token"


async def test_roles_come_from_the_configured_claim(jwks_url: str) -> None:
    auth = authenticator(settings(jwks_url, auth_roles_claim="realm_access.roles"))
    nested = token(realm_access={"roles": ["operator"]}, roles=["approver"])
    assert (await auth.principal(f"Bearer {nested}")).roles == {"operator"}
    assert roles_in({"roles": 7}, "roles") == []


async def test_static_tokens_for_development() -> None:
    auth = authenticator(
        Settings(auth_tokens='{"dev-1": {"sub": "olga", "roles": ["operator"]}}')  # type: ignore[arg-type]
    )
    assert await auth.principal("Bearer dev-1") == Principal("olga", frozenset({"operator"}))
    assert await auth.principal("bearer  dev-1 ") == Principal("olga", frozenset({"operator"}))
    for header, why in [
        (None, "no bearer token"),
        ("", "no bearer token"),
        ("Basic b2xnYTpwdw==", "not 'Bearer <token>'"),
        ("Bearer dev-2", "unknown bearer token"),
    ]:
        with pytest.raises(Unauthenticated, match=why):
            await auth.principal(header)


async def test_static_tokens_and_jwts_together(jwks_url: str) -> None:
    auth = authenticator(settings(jwks_url, auth_tokens='{"dev-1": {"sub": "olga", "roles": []}}'))
    assert (await auth.principal("Bearer dev-1")).subject == "olga"
    assert (await auth.principal(f"Bearer {token()}")).subject == "alice"


async def test_nothing_configured_refuses_everyone() -> None:
    auth = authenticator(Settings())
    with pytest.raises(Unauthenticated, match=r"no authentication configured \(SAGA_AUTH_TOKENS"):
        await auth.principal("Bearer anything")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{", "not JSON"),
        ("[]", "must be"),
        ('{"t": {"roles": []}}', "needs a non-empty token and a sub"),
        ('{"t": {"sub": "a", "roles": "operator"}}', "roles is a list"),
    ],
)
def test_malformed_static_tokens_are_a_one_line_error_without_the_tokens(
    text: str, why: str
) -> None:
    with pytest.raises(ConfigurationError, match=why) as refused:
        StaticTokens.parse(text)
    assert '"t"' not in str(refused.value)


def test_a_jwks_url_needs_an_issuer_an_audience_and_https() -> None:
    with pytest.raises(ConfigurationError, match="SAGA_AUTH_ISSUER and SAGA_AUTH_AUDIENCE"):
        authenticator(Settings(auth_jwks_url="https://idp.test/jwks"))
    with pytest.raises(ConfigurationError, match="https"):
        authenticator(settings("http://idp.test/jwks"))


def test_the_static_tokens_setting_is_secret() -> None:
    configured = Settings(auth_tokens='{"s3cr3t": {"sub": "a"}}')  # type: ignore[arg-type]
    assert "s3cr3t" not in repr(configured)


def test_a_route_names_a_known_role_and_a_public_one_none() -> None:
    service = Service("orders")
    with pytest.raises(ValueError, match="role 'admin' is not one of"):
        service.route("GET", "/x", role="admin")
    with pytest.raises(ValueError, match="public: no role"):
        service.route("GET", "/x", role="viewer", public=True)
