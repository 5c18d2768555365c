"""Who is calling: bearer tokens on the HTTP endpoints, and the roles they carry.

Every endpoint but health needs ``Authorization: Bearer <token>``. A token is either

* a JWT from your OIDC provider (production): signature checked with the provider's
  keys from ``SAGA_AUTH_JWKS_URL`` (RS256 or ES256), and its ``exp``, ``iss``
  (``SAGA_AUTH_ISSUER``) and ``aud`` (``SAGA_AUTH_AUDIENCE``); roles from
  ``SAGA_AUTH_ROLES_CLAIM``; verified with PyJWT;
* or a static token from ``SAGA_AUTH_TOKENS`` (development and tests only).

With neither configured every request is refused: closed by default. The caller is a
:class:`Principal`; an action needing a role it lacks is :class:`Forbidden`::

    auth = authenticator(Settings(auth_tokens='{"t0k3n": {"sub": "alice", "roles": ["operator"]}}'))
    principal = await auth.principal("Bearer t0k3n")
    assert principal.subject == "alice" and principal.can("viewer")
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from saga.errors import ConfigurationError, SagaError
from saga.security.tokens import require_https
from saga.settings import Settings

#: The roles the framework knows. ``viewer`` reads; ``operator`` acts on sagas (retry,
#: skip, resolve, cancel, start); ``approver`` decides approval tasks assigned to them.
ROLES = ("viewer", "operator", "approver")

#: Signature algorithms a JWT may use: asymmetric only, so the keys come from the provider.
ALGORITHMS = ("RS256", "ES256")

_NOT_CONFIGURED = "no authentication configured (SAGA_AUTH_TOKENS or SAGA_AUTH_JWKS_URL)"


@dataclass(frozen=True)
class Principal:
    """The verified caller: the token's subject and roles."""

    subject: str
    roles: frozenset[str]

    def can(self, role: str) -> bool:
        """True if the caller has ``role``; ``operator`` and ``approver`` imply ``viewer``."""
        if role in self.roles:
            return True
        return role == "viewer" and bool(self.roles & {"operator", "approver"})


class Unauthenticated(SagaError):
    """No token, or one that is not valid (expired, wrong issuer or audience, bad
    signature, unknown): HTTP 401. The message says why, never the token."""


class Forbidden(SagaError):
    """Authenticated, but not allowed: lacking the role, or not the one the action is
    for (an approval task's assignee): HTTP 403."""


class Authenticator(Protocol):
    async def principal(self, authorization: str | None) -> Principal:
        """The caller of a request whose ``Authorization`` header is ``authorization``
        (``"Bearer <token>"`` or None); :class:`Unauthenticated` saying why."""
        ...


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        raise Unauthenticated("no bearer token (Authorization: Bearer <token>)")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header is not 'Bearer <token>'")
    return token.strip()


class NoAuthentication:
    """Nothing configured: every caller refused."""

    async def principal(self, authorization: str | None) -> Principal:
        raise Unauthenticated(_NOT_CONFIGURED)


class StaticTokens:
    """Tokens from ``SAGA_AUTH_TOKENS``: for development and tests, never production."""

    def __init__(self, tokens: Mapping[str, Principal]) -> None:
        self._tokens = [(token.encode(), who) for token, who in tokens.items()]

    @classmethod
    def parse(cls, text: str) -> StaticTokens:
        """``{"<token>": {"sub": "alice", "roles": ["operator"]}}``; a one-line
        :class:`ConfigurationError` naming the setting (never a token) when malformed."""
        try:
            raw = json.loads(text)
        except ValueError:
            raise ConfigurationError("SAGA_AUTH_TOKENS is not JSON") from None
        if not isinstance(raw, dict):
            raise ConfigurationError('SAGA_AUTH_TOKENS must be {"<token>": {"sub": ..., ...}}')
        tokens: dict[str, Principal] = {}
        for position, (token, who) in enumerate(raw.items(), 1):
            subject = who.get("sub") if isinstance(who, dict) else None
            roles = who.get("roles", []) if isinstance(who, dict) else None
            if not token or not isinstance(subject, str) or not subject:
                raise ConfigurationError(
                    f"SAGA_AUTH_TOKENS: token #{position} needs a non-empty token and a sub"
                )
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise ConfigurationError(f"SAGA_AUTH_TOKENS: token #{position}: roles is a list")
            tokens[token] = Principal(subject, frozenset(roles))
        return cls(tokens)

    async def principal(self, authorization: str | None) -> Principal:
        return self.find(bearer(authorization)) or _unknown()

    def find(self, token: str) -> Principal | None:
        given = token.encode()
        found = None
        for known, who in self._tokens:  # every one compared: no timing hint
            if hmac.compare_digest(known, given):
                found = who
        return found


def _unknown() -> Principal:
    raise Unauthenticated("unknown bearer token")


class JwtAuthenticator:
    """OAuth 2.0 / OIDC access tokens (JWTs) verified with the provider's JWKS (PyJWT)."""

    def __init__(
        self, jwks_url: str, *, issuer: str, audience: str, roles_claim: str = "roles"
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.roles_claim = roles_claim
        # Keys cached, fetched again for a key id it does not know (a rotation).
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)

    async def principal(self, authorization: str | None) -> Principal:
        token = bearer(authorization)
        try:
            # The key fetch is blocking I/O (rare: the keys are cached).
            key = await asyncio.to_thread(self._keys.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the token is not from the expected issuer") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is not for this audience") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify") from None
        except jwt.PyJWKClientConnectionError:
            raise Unauthenticated("the identity provider's keys cannot be fetched") from None
        except jwt.PyJWKClientError:
            raise Unauthenticated(
                "the token is signed by a key the provider does not list"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the token is not valid ({type(exc).__name__})") from None
        except (TypeError, ValueError) as exc:
            # E.g. an ES256 header naming an RSA key of the JWKS: the key does not fit.
            raise Unauthenticated(
                f"the token's algorithm does not fit its key ({type(exc).__name__})"
            ) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the token has no subject")
        return Principal(subject, frozenset(roles_in(claims, self.roles_claim)))


def roles_in(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The roles at ``claim`` (a dotted path): a list of names, or one space-separated text."""
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [r for r in value if isinstance(r, str)]
    return []


class Either:
    """Static tokens first, then JWTs (both configured: a development setup with an IdP)."""

    def __init__(self, static: StaticTokens, jwts: JwtAuthenticator) -> None:
        self._static = static
        self._jwts = jwts

    async def principal(self, authorization: str | None) -> Principal:
        found = self._static.find(bearer(authorization))
        return found if found is not None else await self._jwts.principal(authorization)


def authenticator(settings: Settings) -> Authenticator:
    """The authenticator ``settings`` configure; every request refused when none is."""
    static = (
        StaticTokens.parse(settings.auth_tokens.get_secret_value())
        if settings.auth_tokens is not None and settings.auth_tokens.get_secret_value()
        else None
    )
    jwts = None
    if settings.auth_jwks_url:
        if not settings.auth_issuer or not settings.auth_audience:
            raise ConfigurationError(
                "SAGA_AUTH_JWKS_URL needs SAGA_AUTH_ISSUER and SAGA_AUTH_AUDIENCE"
            )
        try:
            require_https(settings.auth_jwks_url, "SAGA_AUTH_JWKS_URL")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        jwts = JwtAuthenticator(
            settings.auth_jwks_url,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            roles_claim=settings.auth_roles_claim,
        )
    if static is not None and jwts is not None:
        return Either(static, jwts)
    return static or jwts or NoAuthentication()
