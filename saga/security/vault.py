"""Connect tokens: users' third-party credentials, encrypted at rest, referenced by handle.

A user connects their bank (or mailbox, or CRM) once; the access and refresh
tokens go into the vault and the saga carries only the opaque handle. A step
declares the connection it needs::

    @service.step(CHARGE, connection=Connection("bank", handle_field="bank_connection"))
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        token = ctx.connection_token          # resolved just before the handler ran

Just before the handler runs, the SDK resolves the handle: a token that would
expire before the step's timeout is refreshed first (OAuth 2.0 refresh-token
grant at the provider's endpoint); a revoked connection, or a refresh the
provider answers with ``invalid_grant``, fails the step as
:class:`ConnectionRevoked` (not retried), so the saga compensates.

At rest every token is AES-256-GCM ciphertext under a key of the key ring
(``SAGA_VAULT_KEYS`` JSON ``{key id: base64 32 bytes}`` or
``SAGA_VAULT_KEYS_FILE``, ``SAGA_VAULT_KEY_ID`` the current one), bound to its
handle. Rotation: add a key, make it current, run :meth:`Vault.rotate` (``saga
vault rotate``) to re-encrypt older rows, then drop the old key. Needs the
``security`` extra (cryptography).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from saga.errors import SagaError
from saga.resilience.retry import NonRetryableError
from saga.security.tokens import OAuthRefusal, require_https, token_request

__all__ = [
    "Connection",
    "ConnectionRevoked",
    "ConnectionUnavailable",
    "OAuthRefresh",
    "ProviderRefusedClient",
    "Refresher",
    "Vault",
    "VaultError",
    "VaultKeys",
]


class ConnectionRevoked(NonRetryableError):
    """The user's connection is revoked or its grant is no longer valid: the step fails."""


class ProviderRefusedClient(NonRetryableError):
    """The provider refused the service's own client credentials: the step fails, the
    user's tokens are kept (fix the service's configuration)."""


class ConnectionNotOwned(ConnectionRevoked):
    """The handle names a connection of another user than the message's: refused, and
    the connection stays as it is (its owner still uses it)."""


class ConnectionUnavailable(SagaError):
    """The provider could not refresh the token just now: the step is retried per policy."""


class VaultError(SagaError):
    """The vault is misconfigured or a row cannot be decrypted with the known keys."""


@dataclass(frozen=True)
class Connection:
    """A step's need for a user's connect token: which provider, and where the handle is.

    ``required=False``: a message without a handle runs the step without a token
    (``ctx.connection_token`` is then an error), e.g. card payments next to
    pay-by-bank ones. The vault keys are then needed only once a handle arrives.
    """

    provider: str
    handle_field: str = "connection"
    required: bool = True
    #: The message's field naming the user the connection must belong to (its owner,
    #: as given to ``Vault.put``): a handle of someone else's connection fails the step
    #: (:class:`ConnectionNotOwned`, not retried) and leaves that connection as it is.
    owner_field: str | None = None


class VaultKeys:
    """The key ring: the current key encrypts; every known key decrypts."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise VaultError(f"current vault key {current!r} is not among the keys")
        for key_id, key in keys.items():
            if len(key) != 32:
                raise VaultError(f"vault key {key_id!r} must be 32 bytes (AES-256)")
        self.keys = dict(keys)
        self.current = current

    @staticmethod
    def configured(environ: Mapping[str, str] = os.environ) -> bool:
        """Whether the environment names vault keys at all."""
        return bool(environ.get("SAGA_VAULT_KEYS") or environ.get("SAGA_VAULT_KEYS_FILE"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> VaultKeys:
        raw: dict[str, str] = {}
        if environ.get("SAGA_VAULT_KEYS_FILE"):
            with open(environ["SAGA_VAULT_KEYS_FILE"], encoding="utf-8") as handle:
                raw.update(json.load(handle))
        if environ.get("SAGA_VAULT_KEYS"):
            raw.update(json.loads(environ["SAGA_VAULT_KEYS"]))
        current = environ.get("SAGA_VAULT_KEY_ID")
        if not raw or not current:
            raise VaultError("the vault needs SAGA_VAULT_KEYS (or _FILE) and SAGA_VAULT_KEY_ID")
        return cls({k: base64.b64decode(v) for k, v in raw.items()}, current)

    @staticmethod
    def new_key() -> str:
        """A fresh key, base64, for ``SAGA_VAULT_KEYS``."""
        return base64.b64encode(secrets.token_bytes(32)).decode()

    def encrypt(self, plaintext: str, context: Sealed) -> tuple[str, bytes]:
        nonce = secrets.token_bytes(12)
        sealed = _aead(self.keys[self.current]).encrypt(nonce, plaintext.encode(), context.aad)
        return self.current, nonce + sealed

    def decrypt(self, key_id: str, blob: bytes, context: Sealed) -> str:
        key = self.keys.get(key_id)
        if key is None:
            raise VaultError(
                f"connection {context.handle} is encrypted with unknown key {key_id!r}"
            )
        try:
            plain: bytes = _aead(key).decrypt(blob[:12], blob[12:], context.aad)
        except Exception:
            raise VaultError(
                f"connection {context.handle} cannot be decrypted (tampered?)"
            ) from None
        return plain.decode()


@dataclass(frozen=True)
class Sealed:
    """What a ciphertext is bound to: its row, its column, its owner and provider."""

    handle: str
    column: str
    owner: str
    provider: str

    @property
    def aad(self) -> bytes:
        return json.dumps([self.handle, self.column, self.owner, self.provider]).encode()

    @classmethod
    def of(cls, row: Mapping[str, Any], handle: str, column: str) -> Sealed:
        return cls(handle, column, row["owner"], row["provider"])


def _aead(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise VaultError(
            "the vault needs the 'security' extra: pip install 'kafka-saga[security]'"
        ) from None
    return AESGCM(key)


class Refresher(Protocol):
    def __call__(self, refresh_token: str) -> tuple[str, str | None, float]:
        """``(access token, new refresh token or None, lifetime in seconds)``."""
        ...


class OAuthRefresh:
    """OAuth 2.0 refresh-token grant at a provider's token endpoint."""

    def __init__(
        self, token_url: str, client_id: str, client_secret: str, timeout_s: float = 10
    ) -> None:
        require_https(token_url, "token URL")
        self.token_url = token_url
        self._client = {"client_id": client_id, "client_secret": client_secret}
        self._timeout_s = timeout_s

    def __call__(self, refresh_token: str) -> tuple[str, str | None, float]:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **self._client}
        try:
            answer = token_request(self.token_url, form, self._timeout_s)
        except OAuthRefusal as refused:
            if refused.code == "invalid_grant":  # the user's grant is gone
                raise ConnectionRevoked(str(refused)) from None
            # Our own client credentials (or scope): the user's tokens are not at fault.
            raise ProviderRefusedClient(str(refused)) from None
        refresh = answer.get("refresh_token")
        return (
            answer["access_token"],
            refresh if isinstance(refresh, str) else None,
            float(answer.get("expires_in", 3600)),
        )


class Vault:
    """Connect tokens in PostgreSQL (table ``saga_connections``), by opaque handle."""

    def __init__(self, keys: VaultKeys, refreshers: Mapping[str, Refresher] | None = None) -> None:
        self.keys = keys
        self.refreshers = dict(refreshers or {})

    async def put(
        self,
        db: Any,
        *,
        owner: str,
        provider: str,
        access_token: str,
        refresh_token: str | None,
        expires_in: float,
    ) -> str:
        """Store a user's tokens; returns the handle a saga may carry."""
        handle = f"conn_{secrets.token_urlsafe(18)}"
        key_id, access = self.keys.encrypt(access_token, Sealed(handle, "access", owner, provider))
        refresh = (
            self.keys.encrypt(refresh_token, Sealed(handle, "refresh", owner, provider))[1]
            if refresh_token
            else None
        )
        await db.execute(
            "INSERT INTO saga_connections (handle, owner, provider, key_id, access_ct, refresh_ct,"
            " expires_at) VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
            handle,
            owner,
            provider,
            key_id,
            access,
            refresh,
            expires_in,
        )
        return handle

    async def revoke(self, db: Any, handle: str, *, owner: str | None = None) -> bool:
        """The user withdrew access: the handle resolves no more. ``owner``: only if the
        connection is theirs (``False`` otherwise, as for a handle that does not exist)."""
        status: str = await db.execute(
            "UPDATE saga_connections SET revoked_at = now(), access_ct = NULL, refresh_ct = NULL"
            " WHERE handle = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR owner = $2)",
            handle,
            owner,
        )
        return status != "UPDATE 0"

    async def resolve(
        self, pool: Any, handle: str, *, valid_for: timedelta, owner: str | None = None
    ) -> str:
        """An access token for ``handle`` valid for at least ``valid_for`` (refreshed if not).
        ``owner``: the connection must be this user's (:class:`ConnectionNotOwned`)."""
        # Shielded: once the provider rotated the refresh token, the new one must be saved
        # even if the step is cancelled meanwhile.
        return await asyncio.shield(self._resolve_in(pool, handle, valid_for, owner))

    async def _resolve_in(
        self, pool: Any, handle: str, valid_for: timedelta, owner: str | None
    ) -> str:
        async with pool.acquire(timeout=30) as db:
            async with db.transaction():
                # One refresh per handle at a time; others wait, but not forever.
                await db.execute("SET LOCAL lock_timeout = '30s'")
                found = await self._resolve(db, handle, valid_for, owner)
            if isinstance(found, ConnectionRevoked):
                # The provider withdrew the grant: so do we, for good (committed).
                await self.revoke(db, handle)
                raise found
            return found

    async def _resolve(
        self, db: Any, handle: str, valid_for: timedelta, owner: str | None = None
    ) -> str | ConnectionRevoked:
        row = await db.fetchrow(
            "SELECT owner, provider, key_id, access_ct, refresh_ct, revoked_at,"
            " expires_at <= now() + make_interval(secs => $2) AS expiring"
            " FROM saga_connections WHERE handle = $1 FOR UPDATE",
            handle,
            valid_for.total_seconds(),
        )
        if row is None:
            raise ConnectionRevoked(f"no connection {handle}")
        if owner is not None and row["owner"] != owner:
            # Raised, not returned: someone else's handle must not revoke it.
            raise ConnectionNotOwned(f"connection {handle} does not belong to {owner!r}")
        if row["revoked_at"] is not None:
            raise ConnectionRevoked(f"connection {handle} was revoked")
        if not row["expiring"]:
            return self.keys.decrypt(
                row["key_id"], row["access_ct"], Sealed.of(row, handle, "access")
            )
        refresher = self.refreshers.get(row["provider"])
        if refresher is None or row["refresh_ct"] is None:
            raise ConnectionRevoked(
                f"connection {handle} expires within {valid_for} and cannot be refreshed"
            )
        old_refresh = self.keys.decrypt(
            row["key_id"], row["refresh_ct"], Sealed.of(row, handle, "refresh")
        )
        try:
            access, refresh, lifetime = await asyncio.to_thread(refresher, old_refresh)
        except ConnectionRevoked as refused:
            return refused
        except ProviderRefusedClient:
            raise
        except Exception as exc:  # the provider, not our database: the step's problem
            raise ConnectionUnavailable(
                f"refreshing connection {handle} failed: {type(exc).__name__}: {exc}"
            ) from exc
        key_id, access_ct = self.keys.encrypt(access, Sealed.of(row, handle, "access"))
        refresh_ct = self.keys.encrypt(refresh or old_refresh, Sealed.of(row, handle, "refresh"))[1]
        await db.execute(
            "UPDATE saga_connections SET key_id = $2, access_ct = $3, refresh_ct = $4,"
            " expires_at = now() + make_interval(secs => $5), refreshed_at = now()"
            " WHERE handle = $1",
            handle,
            key_id,
            access_ct,
            refresh_ct,
            lifetime,
        )
        return access

    async def rotate(self, db: Any) -> tuple[int, list[str]]:
        """Re-encrypt every row not under the current key.

        Returns how many were re-encrypted, and the handles that could not be
        decrypted (left as they are, for an operator to look at).
        """
        rows = await db.fetch(
            "SELECT handle, owner, provider, key_id, access_ct, refresh_ct FROM saga_connections"
            " WHERE key_id <> $1 AND revoked_at IS NULL FOR UPDATE",
            self.keys.current,
        )
        rotated, unreadable = 0, []
        for row in rows:
            handle = row["handle"]
            try:
                plain = [
                    self.keys.decrypt(
                        row["key_id"], row[f"{column}_ct"], Sealed.of(row, handle, column)
                    )
                    if row[f"{column}_ct"] is not None
                    else None
                    for column in ("access", "refresh")
                ]
            except VaultError:
                unreadable.append(handle)
                continue
            sealed = [
                self.keys.encrypt(p, Sealed.of(row, handle, column))[1] if p is not None else None
                for p, column in zip(plain, ("access", "refresh"), strict=True)
            ]
            await db.execute(
                "UPDATE saga_connections SET key_id = $2, access_ct = $3, refresh_ct = $4"
                " WHERE handle = $1",
                handle,
                self.keys.current,
                *sealed,
            )
            rotated += 1
        return rotated, unreadable
