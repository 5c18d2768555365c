"""Connect tokens in the vault, on the real PostgreSQL, refreshed at a real local endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any, ClassVar

import asyncpg
import pytest

from contracts.payment import PaymentCharged, PaymentFailed
from saga.dev.processes import free_port
from saga.messages.base import Event
from saga.outbox.schema import migrate
from saga.participant.service import Service, StepContext
from saga.resilience.retry import RetryPolicy
from saga.security.vault import (
    Connection,
    ConnectionRevoked,
    OAuthRefresh,
    ProviderRefusedClient,
    Vault,
    VaultKeys,
)
from saga.testing import ServiceTestKit
from tests.conftest import Infra
from tests.http_helpers import QuietHandler, serving
from tests.system_helpers import fresh_database

ACCESS, REFRESH = "at-very-secret-1", "rt-very-secret-1"


class Provider:
    """A user's bank: answers refresh-token grants, until the grant is revoked."""

    def __init__(self) -> None:
        self.grants: list[dict[str, list[str]]] = []
        self.revoked = False
        self.client_refused = False


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    state = Provider()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            form = urllib.parse.parse_qs(
                self.rfile.read(int(self.headers["Content-Length"])).decode()
            )
            state.grants.append(form)
            n = len(state.grants) + 1
            answer: dict[str, Any]
            if state.client_refused:
                status, answer = 401, {"error": "invalid_client"}
            elif state.revoked:
                status, answer = 400, {"error": "invalid_grant"}
            else:
                status = 200
                answer = {"access_token": f"at-{n}", "refresh_token": f"rt-{n}", "expires_in": 3600}
            self.send_json(status, answer)

    with serving(Handler) as port:
        yield state, f"http://127.0.0.1:{port}/token"


def ring(**keys: str) -> VaultKeys:
    *_, current = keys
    return VaultKeys({k: base64.b64decode(v) for k, v in keys.items()}, current)


K1, K2 = VaultKeys.new_key(), VaultKeys.new_key()


@pytest.fixture
def database(infra: Infra) -> str:
    return fresh_database(infra.database_url)


@pytest.fixture
async def db(database: str) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    async with pool.acquire() as connection:
        await migrate(connection, "vault")
    try:
        yield pool
    finally:
        await pool.close()


async def connect(vault: Vault, db: Any, owner: str, expires_in: float) -> str:
    """``owner`` connects their bank: the test's tokens go into ``vault``."""
    return await vault.put(
        db,
        owner=owner,
        provider="bank",
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_in=expires_in,
    )


async def stored(pool: Any, handle: str) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM saga_connections WHERE handle = $1", handle)
    return dict(row)


async def test_tokens_are_kept_only_as_ciphertext_bound_to_their_handle(db: Any) -> None:
    vault = Vault(ring(k1=K1))
    handle = await connect(vault, db, "alice", 3600)
    row = await stored(db, handle)
    everything = repr(row).encode() + row["access_ct"] + row["refresh_ct"]
    assert b"very-secret" not in everything
    assert await vault.resolve(db, handle, valid_for=timedelta(seconds=30)) == ACCESS
    # Ciphertext moved to another row does not decrypt: it is bound to its handle.
    other = await vault.put(
        db, owner="bob", provider="bank", access_token="x", refresh_token=None, expires_in=3600
    )
    await db.execute(
        "UPDATE saga_connections SET access_ct = $2 WHERE handle = $1", other, row["access_ct"]
    )
    with pytest.raises(Exception, match="cannot be decrypted"):
        await vault.resolve(db, other, valid_for=timedelta(seconds=30))


async def test_a_token_expiring_within_the_step_is_refreshed_before_it(
    db: Any, provider: tuple[Provider, str]
) -> None:
    state, url = provider
    vault = Vault(ring(k1=K1), {"bank": OAuthRefresh(url, "app", "app-secret")})
    handle = await connect(vault, db, "alice", 20)  # expires mid-saga: before a 60 s step would end
    assert await vault.resolve(db, handle, valid_for=timedelta(seconds=10)) == ACCESS
    assert state.grants == []
    assert await vault.resolve(db, handle, valid_for=timedelta(seconds=60)) == "at-2"
    assert state.grants[0]["grant_type"] == ["refresh_token"]
    assert state.grants[0]["refresh_token"] == [REFRESH]
    assert await vault.resolve(db, handle, valid_for=timedelta(seconds=60)) == "at-2", "cached"
    row = await stored(db, handle)
    assert b"at-2" not in row["access_ct"] and row["refreshed_at"] is not None


async def test_revoked_connections_and_refused_grants_resolve_no_more(
    db: Any, provider: tuple[Provider, str]
) -> None:
    state, url = provider
    vault = Vault(ring(k1=K1), {"bank": OAuthRefresh(url, "app", "app-secret")})
    handle = await connect(vault, db, "alice", 3600)
    assert await vault.revoke(db, handle)
    with pytest.raises(ConnectionRevoked, match="revoked"):
        await vault.resolve(db, handle, valid_for=timedelta(seconds=1))
    row = await stored(db, handle)
    assert row["access_ct"] is None and row["refresh_ct"] is None, "nothing kept once revoked"

    expiring = await connect(vault, db, "bob", 1)
    state.revoked = True  # the user withdrew access at the provider
    with pytest.raises(ConnectionRevoked, match="invalid_grant"):
        await vault.resolve(db, expiring, valid_for=timedelta(seconds=60))
    assert (await stored(db, expiring))["revoked_at"] is not None


async def test_a_refusal_of_our_own_client_keeps_the_users_tokens(
    db: Any, provider: tuple[Provider, str]
) -> None:
    state, url = provider
    vault = Vault(ring(k1=K1), {"bank": OAuthRefresh(url, "app", "wrong-secret")})
    handle = await connect(vault, db, "erin", 1)
    state.client_refused = True
    with pytest.raises(ProviderRefusedClient, match="invalid_client"):
        await vault.resolve(db, handle, valid_for=timedelta(seconds=60))
    row = await stored(db, handle)
    assert row["revoked_at"] is None and row["refresh_ct"] is not None, "the user keeps access"


async def test_keys_rotate_without_losing_a_token(db: Any) -> None:
    old = Vault(ring(k1=K1))
    handle = await connect(old, db, "alice", 3600)
    both = Vault(ring(k1=K1, k2=K2))  # k2 is now current
    async with db.acquire() as connection, connection.transaction():
        assert await both.rotate(connection) == (1, [])
    assert (await stored(db, handle))["key_id"] == "k2"
    only_new = Vault(ring(k2=K2))  # k1 retired
    assert await only_new.resolve(db, handle, valid_for=timedelta(seconds=1)) == ACCESS


def charging_service() -> Service:
    service = Service(
        "payment",
        store="postgres",
        retry=RetryPolicy(initial_interval=timedelta(milliseconds=10), maximum_attempts=3),
    )

    @service.on(
        BankReserved,
        fails_with=PaymentFailed,
        connection=Connection("bank", handle_field="bank_connection"),
        attempt_timeout=timedelta(seconds=60),
    )
    async def charge(reserved: BankReserved, ctx: StepContext) -> PaymentCharged:
        return PaymentCharged(
            order_id=reserved.order_id,
            amount_cents=reserved.amount_cents,
            charge_id=f"paid-with-{ctx.connection_token}",
        )

    return service


class BankReserved(Event):
    """An order event that carries the user's bank connection handle (never the token)."""

    message_type: ClassVar[str] = "inventory.ReservedForBankPayment"

    order_id: str
    amount_cents: int
    bank_connection: str


async def test_a_step_gets_the_token_and_a_revoked_connection_fails_it_without_retries(
    database: str, provider: tuple[Provider, str], db: Any
) -> None:
    _, url = provider
    vault = Vault(ring(k1=K1), {"bank": OAuthRefresh(url, "app", "app-secret")})
    service = charging_service()
    async with ServiceTestKit(service, database_url=database, vault=vault) as kit:
        good = await connect(vault, db, "alice", 3600)
        bad = await connect(vault, db, "bob", 3600)
        await vault.revoke(db, bad)
        ok = await kit.send(reserved("o-good", good), saga_id=f"o-good-{good[-6:]}")
        refused = await kit.send(reserved("o-bad", bad), saga_id=f"o-bad-{bad[-6:]}")
        emitted = [e.payload for e in kit.emitted()]
    assert ok.kind == "completed"
    assert isinstance(emitted[0], PaymentCharged) and emitted[0].charge_id == f"paid-with-{ACCESS}"
    assert (refused.kind, refused.attempts) == ("failed", 1), "not retried"
    assert isinstance(emitted[1], PaymentFailed)
    assert emitted[1].error_type == "ConnectionRevoked"
    assert "very-secret" not in emitted[1].error_message


async def test_a_refresh_endpoint_that_is_down_is_retried_then_fails_the_step(
    database: str, db: Any
) -> None:
    down = f"http://127.0.0.1:{free_port()}/token"
    vault = Vault(ring(k1=K1), {"bank": OAuthRefresh(down, "app", "app-secret", timeout_s=2)})
    async with ServiceTestKit(charging_service(), database_url=database, vault=vault) as kit:
        handle = await connect(vault, db, "carol", 1)  # must be refreshed before the step
        outcome = await kit.send(reserved("o-down", handle), saga_id=f"o-down-{handle[-6:]}")
        [failure] = [e.payload for e in kit.emitted()]
    assert (outcome.kind, outcome.attempts) == ("failed", 3), "retried per the step's policy"
    assert isinstance(failure, PaymentFailed)
    assert failure.error_type == "ConnectionUnavailable"
    assert "Connection refused" in failure.error_message, failure.error_message


def reserved(order_id: str, handle: str) -> Event:
    return BankReserved(order_id=order_id, amount_cents=500, bank_connection=handle)


async def test_operators_rotate_keys_and_revoke_from_the_command_line(
    database: str, db: Any
) -> None:
    handle = await Vault(ring(k1=K1)).put(
        db, owner="dave", provider="bank", access_token=ACCESS, refresh_token=None, expires_in=60
    )
    env = {
        **os.environ,
        "SAGA_DATABASE_URL": database,
        "SAGA_VAULT_KEYS": json.dumps({"k1": K1, "k2": K2}),
        "SAGA_VAULT_KEY_ID": "k2",
    }

    def saga(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "saga.cli", "vault", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    rotated = await asyncio.to_thread(saga, "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 1 connection(s) under key 'k2'" in rotated.stdout
    assert (await stored(db, handle))["key_id"] == "k2"
    assert ACCESS not in rotated.stdout + rotated.stderr
    revoked = await asyncio.to_thread(saga, "revoke", handle)
    assert revoked.returncode == 0 and (await stored(db, handle))["revoked_at"] is not None


class MaybeBankReserved(Event):
    message_type: ClassVar[str] = "inventory.ReservedForAnyPayment"

    order_id: str
    amount_cents: int
    bank_connection: str | None = None


async def test_an_optional_connection_runs_without_a_handle_and_fails_one_without_a_vault() -> None:
    service = Service("payment", retry=RetryPolicy(maximum_attempts=3))

    @service.on(
        MaybeBankReserved,
        fails_with=PaymentFailed,
        connection=Connection("bank", handle_field="bank_connection", required=False),
    )
    async def charge(reserved: MaybeBankReserved, ctx: StepContext) -> PaymentCharged:
        paid_by = "card" if reserved.bank_connection is None else ctx.connection_token
        return PaymentCharged(order_id=reserved.order_id, amount_cents=1, charge_id=paid_by)

    async with ServiceTestKit(service) as kit:  # no vault in this process
        by_card = await kit.send(
            MaybeBankReserved(order_id="o-card", amount_cents=1), saga_id="o-card"
        )
        by_bank = await kit.send(
            MaybeBankReserved(order_id="o-bank", amount_cents=1, bank_connection="conn_x"),
            saga_id="o-bank",
        )
        paid, refused = [e.payload for e in kit.emitted()]
    assert by_card.kind == "completed"
    assert isinstance(paid, PaymentCharged) and paid.charge_id == "card"
    assert (by_bank.kind, by_bank.attempts) == ("failed", 1)
    assert isinstance(refused, PaymentFailed) and refused.error_type == "ConnectionRevoked"
    assert "no vault keys (SAGA_VAULT_KEYS)" in refused.error_message
