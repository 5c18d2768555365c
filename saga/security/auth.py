"""Who calls an HTTP endpoint, and what they may do: bearer tokens and roles.

Three roles: ``viewer`` (reads everything, changes nothing), ``operator`` (acts on
sagas, redrives dead letters) and ``approver`` (decides the tasks assigned to them);
``operator`` and ``approver`` imply ``viewer``. The acting person is the token's
subject, never a name taken from a request's body.

Static tokens for development (``SAGA_AUTH_TOKENS``)::

    SAGA_AUTH_TOKENS='{"dev-op": {"sub": "alice", "roles": ["operator"]}}'

Nothing configured: every request is refused (closed by default).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from saga.errors import SagaError

if TYPE_CHECKING:
    from saga.settings import Settings

__all__ = [
    "ROLES",
    "Authenticator",
    "Forbidden",
    "Principal",
    "StaticTokens",
    "Unauthenticated",
    "authenticator",
]

ROLES = ("viewer", "operator", "approver")

#: Roles that imply viewer.
_READERS = frozenset(ROLES)


@dataclass(frozen=True)
class Principal:
    """The person (or service) a request acts for."""

    #: The token's ``sub``: the acting person.
    subject: str
    roles: frozenset[str]

    def can(self, role: str) -> bool:
        """True if the principal holds ``role``; every role implies ``viewer``."""
        if role == "viewer":
            return bool(self.roles & _READERS)
        return role in self.roles


class Unauthenticated(SagaError):
    """No token, or one that is not valid (HTTP 401); the message never echoes it."""


class Forbidden(SagaError):
    """Authenticated, but lacking the role or not the owner (HTTP 403)."""


class Authenticator(Protocol):
    async def principal(self, authorization: str | None) -> Principal:
        """The principal of ``authorization`` (the raw ``Authorization`` header value,
        ``Bearer <token>``, or ``None``); raises :class:`Unauthenticated` saying why."""
        ...


NOT_CONFIGURED = "no authentication configured (SAGA_AUTH_TOKENS or SAGA_AUTH_JWKS_URL)"


class StaticTokens:
    """Tokens named in ``SAGA_AUTH_TOKENS``: ``{"<token>": {"sub": ..., "roles": [...]}}``."""

    def __init__(self, tokens: dict[str, Principal]) -> None:
        self._tokens = tokens

    @classmethod
    def parse(cls, text: str) -> StaticTokens:
        try:
            raw: Any = json.loads(text) if text.strip() else {}
        except ValueError:
            raise ValueError("SAGA_AUTH_TOKENS is not JSON") from None
        if not isinstance(raw, dict):
            raise ValueError('SAGA_AUTH_TOKENS: give {"<token>": {"sub": ..., "roles": [...]}}')
        tokens = {}
        for number, (token, claims) in enumerate(raw.items(), 1):
            sub = claims.get("sub") if isinstance(claims, dict) else None
            roles = claims.get("roles", []) if isinstance(claims, dict) else None
            if not isinstance(sub, str) or not sub or not isinstance(roles, list):
                raise ValueError(f"SAGA_AUTH_TOKENS: token {number} needs a sub and a roles list")
            unknown = set(roles) - set(ROLES)
            if unknown:
                raise ValueError(f"SAGA_AUTH_TOKENS: token {number} has unknown roles {unknown}")
            tokens[token] = Principal(sub, frozenset(roles))
        return cls(tokens)

    async def principal(self, authorization: str | None) -> Principal:
        if not self._tokens:
            raise Unauthenticated(NOT_CONFIGURED)
        if not authorization:
            raise Unauthenticated("no bearer token")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header is not 'Bearer <token>'")
        token = token.strip()
        for known, who in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return who
        raise Unauthenticated("unknown token")


def authenticator(settings: Settings) -> Authenticator:
    """The authenticator ``settings`` configure (static tokens here)."""
    text = settings.auth_tokens.get_secret_value() if settings.auth_tokens else ""
    return StaticTokens.parse(text)
