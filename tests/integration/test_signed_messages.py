"""Signed messages with real processes: a refund is obeyed only when the coordinator sent it.

The payment service runs as its own process with ``SAGA_REQUIRE_SIGNATURES``.
The test charges two orders (events signed by inventory, which owns
``inventory.events``), then sends refunds: a genuine one signed with the
coordinator's key, and forged ones (no signature, another service's key, a
changed payload, a replay of the genuine record). Only the genuine one has an
effect; every forgery is in the security dead-letter topic with its reason.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from contracts.catalog import default_registry
from contracts.inventory import InventoryReserved
from contracts.payment import RefundPayment
from saga.dev.otlp import OtlpReceiver
from saga.kafka.config import client_kwargs
from saga.kafka.publisher import Publisher
from saga.messages import headers as h
from saga.messages.base import Message
from saga.messages.codec import RawRecord, decode, encode
from saga.messages.envelope import Envelope
from saga.messages.topics import SECURITY_DEAD_LETTERS
from saga.security.signing import Signer, Verifier, new_hmac_secret, parse_keys
from saga.security.vault import VaultKeys
from tests import http_helpers
from tests.bank_provider import bank_provider
from tests.conftest import Infra
from tests.http_helpers import call_json
from tests.integration.test_coordinator import launch, until
from tests.integration.test_tracing import exporting_to
from tests.kafka_helpers import eventually, read_available, read_records
from tests.system_helpers import System

PRINCIPALS = ("coordinator", "orders", "inventory", "payment", "shipping", "notification")


def keys_for_everyone() -> dict[str, dict[str, str]]:
    return {
        f"{p}-key": {"principal": p, "algorithm": "hmac-sha256", "secret": new_hmac_secret()}
        for p in PRINCIPALS
    }


def signing(keys: dict[str, dict[str, str]]) -> dict[str, str]:
    return {"SAGA_SIGNING_KEYS": json.dumps(keys), "SAGA_REQUIRE_SIGNATURES": "true"}


async def ledger(running: System, order_id: str) -> list[str]:
    connection = await asyncpg.connect(running.database_url)
    try:
        rows = await connection.fetch(
            "SELECT kind FROM payment_ledger WHERE order_id = $1 ORDER BY kind", order_id
        )
    finally:
        await connection.close()
    return [r["kind"] for r in rows]


async def test_only_a_refund_signed_by_the_coordinator_is_obeyed(
    infra: Infra, tmp_path: Path
) -> None:
    keys = keys_for_everyone()
    specs = parse_keys(keys)
    run = uuid.uuid4().hex[:6]
    genuine, target = f"genuine-{run}", f"target-{run}"
    with launch(infra, tmp_path, "payment", env=signing(keys)) as running:
        prefix = running.prefix
        commands, events = f"{prefix}payment.commands", f"{prefix}payment.events"
        as_inventory = running.settings.model_copy(
            update={"signing_keys": specs, "signing_key_id": "inventory-key"}
        )
        async with Publisher(as_inventory) as publisher:
            for order_id in (genuine, target):
                reserved: Envelope[Message] = Envelope(
                    payload=InventoryReserved(
                        order_id=order_id, sku="sku-1", quantity=1, amount_cents=700
                    ),
                    saga_id=order_id,
                    saga_type="order",
                    source="/services/inventory",
                )
                await publisher.publish(f"{prefix}inventory.events", reserved)

        async def charged() -> bool:
            return await ledger(running, genuine) == ["charge"] == await ledger(running, target)

        await eventually(charged, what="both orders charged")

        def refund(order_id: str) -> Envelope[Message]:
            return Envelope(
                payload=RefundPayment(order_id=order_id),
                saga_id=order_id,
                saga_type="order",
                source="/coordinator",
                step="charge",
            )

        coordinator = Signer(specs, "coordinator-key")
        inventory = Signer(specs, "inventory-key")
        real = encode(refund(genuine))
        real_headers = coordinator.sign(commands, real.key, real.value, real.headers)
        forged = encode(refund(target))
        tampered = coordinator.sign(commands, real.key, real.value, real.headers)
        forgeries: dict[str, tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = {
            "unsigned": (forged.key, forged.value, list(forged.headers)),
            "another service's key": (
                forged.key,
                forged.value,
                inventory.sign(commands, forged.key, forged.value, forged.headers),
            ),
            "tampered payload": (
                forged.key,
                (real.value or b"").replace(genuine.encode(), target.encode()),
                [(n, target.encode() if n == h.SAGA_ID else v) for n, v in tampered],
            ),
        }
        plain = running.settings  # a publisher that signs nothing: the forger's
        async with Publisher(plain) as publisher:
            await publisher.publish_raw(
                commands, key=real.key, value=real.value, headers=real_headers
            )

            async def refunded() -> bool:
                return await ledger(running, genuine) == ["charge", "refund"]

            await eventually(refunded, what="the genuine refund carried out")
            for key, value, headers in forgeries.values():
                await publisher.publish_raw(commands, key=key, value=value, headers=headers)
            # The genuine record once more, bytes unchanged: a replay.
            await publisher.publish_raw(
                commands, key=real.key, value=real.value, headers=real_headers
            )

        security = f"{prefix}{SECURITY_DEAD_LETTERS}"
        letters = await read_records(running.settings, security, 4, timeout_s=30)
        reasons = sorted(dict(r.headers)[h.DLQ_REASON].decode().split(":")[0] for r in letters)
        assert reasons == [
            "bad signature for key 'coordinator-key'",
            "replayed",
            "signed by 'inventory', but only 'coordinator' may publish on " + commands,
            "unsigned",
        ], reasons
        signers = sorted(
            (dict(r.headers).get(h.DLQ_SIGNATURE_KEY_ID) or b"-").decode() for r in letters
        )
        assert signers == ["-", "coordinator-key", "coordinator-key", "inventory-key"], (
            "each letter keeps the signature it arrived with, as evidence"
        )
        await asyncio.sleep(1)
        assert await ledger(running, target) == ["charge"], "no forged refund had an effect"
        assert await ledger(running, genuine) == ["charge", "refund"], "refunded once"

        # What payment publishes is signed by payment, and verifies.
        verifier = Verifier(specs, topic_prefix=prefix)
        published = await read_available(running.settings, events)
        registry = default_registry()
        types = []
        for r in published:
            verifier.check(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers))
            raw = RawRecord(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers))
            types.append(decode(raw, registry).type)
        assert sorted(types) == [
            "payment.PaymentCharged",
            "payment.PaymentCharged",
            "payment.PaymentRefunded",
        ]


async def test_a_secured_system_uses_connect_tokens_and_leaks_no_secret(
    infra: Infra, tmp_path: Path
) -> None:
    """Every process signs with its own key and requires signatures from the others;
    payment keeps customers' bank tokens in its vault and talks to a real local bank.

    - alice's token expires before the charge step would end: refreshed, then used;
    - bob disconnects his bank before ordering: the charge fails, the saga compensates;
    - carol pays by bank and the shipment fails: the refund goes out as the merchant,
      with the payment service's machine token.

    Afterwards every topic, every exported span, every log line, every saga-log, inbox
    and outbox row and every vault, ledger and order row is searched for the signing
    secrets, the vault key and every token the bank handed out: none may appear.
    """
    everyone = ("coordinator", "orders", "inventory", "payment", "shipping", "notification")
    keys = keys_for_everyone()
    vault_key = VaultKeys.new_key()
    with OtlpReceiver() as receiver, bank_provider() as bank:
        env = {
            **signing(keys),
            **exporting_to(receiver.endpoint),
            **bank.env(),
            "SAGA_VAULT_KEYS": json.dumps({"v1": vault_key}),
            "SAGA_VAULT_KEY_ID": "v1",
        }
        with launch(infra, tmp_path, *everyone, env=env) as running:
            payment = running.local.url("payment")

            def connect(customer: str, expires_in: float) -> str:
                grant = bank.authorize(customer, expires_in)
                body = {
                    "customer_id": customer,
                    "access_token": grant.access,
                    "refresh_token": grant.refresh,
                    "expires_in": expires_in,
                }
                status, answer = call_json(
                    f"{payment}/connections", "POST", body, token=http_helpers.customer(customer)
                )
                assert status == 201, answer
                return str(answer["handle"])

            alice = await asyncio.to_thread(connect, "alice", 2)  # < the step's 5 s timeout
            bob = await asyncio.to_thread(connect, "bob", 3600)
            carol = await asyncio.to_thread(connect, "carol", 3600)
            gone = f"{payment}/connections/{bob}"
            as_bob = functools.partial(call_json, token=http_helpers.customer("bob"))
            as_mallory = functools.partial(call_json, token=http_helpers.customer("mallory"))
            assert (await asyncio.to_thread(as_mallory, gone, "DELETE"))[0] == 404, "not hers"
            assert (await asyncio.to_thread(as_bob, gone, "DELETE"))[0] == 200
            assert (await asyncio.to_thread(as_bob, gone, "DELETE"))[0] == 404

            run = uuid.uuid4().hex[:6]
            ok, nowhere = f"ok-{run}", f"nowhere-{run}"
            by_alice, by_bob, by_carol = f"alice-{run}", f"bob-{run}", f"nowhere-carol-{run}"
            by_mallory = f"mallory-{run}"
            running.settings = running.settings.model_copy(
                update={"signing_keys": parse_keys(keys), "signing_key_id": "orders-key"}
            )
            await running.place(ok)
            await running.place(nowhere)
            await running.place(by_alice, customer_id="alice", payment_connection=alice)
            await running.place(by_bob, customer_id="bob", payment_connection=bob)
            # Mallory names Carol's connection: refused, and Carol's stays usable after.
            await running.place(by_mallory, customer_id="mallory", payment_connection=carol)
            await until(running, [by_mallory], "compensated")
            await running.place(by_carol, customer_id="carol", payment_connection=carol)
            await until(running, [ok, by_alice], "completed")
            await until(running, [nowhere, by_bob, by_carol, by_mallory], "compensated")

            assert bank.refreshed == ["alice"], "refreshed before the step, once"
            assert sorted(bank.payments) == [("alice", by_alice), ("carol", by_carol)]
            mallory_saga = (await running.sagas([by_mallory]))[by_mallory]
            assert "ConnectionNotOwned" in mallory_saga["reason"], mallory_saga["reason"]
            assert "does not belong to 'mallory'" in mallory_saga["reason"]
            assert [order for _, order in bank.refunds] == [by_carol], "refunded as the merchant"
            bob_saga = (await running.sagas([by_bob]))[by_bob]
            assert bob_saga["steps"]["charge"]["status"] == "failed"
            assert "ConnectionRevoked" in bob_saga["reason"], bob_saga["reason"]
            assert await running.commands_sent(by_bob) == ["inventory.ReleaseInventory"]
            security = f"{running.prefix}{SECURITY_DEAD_LETTERS}"
            assert await read_available(running.settings, security) == [], "nothing refused"
            assert receiver.wait_for(lambda r: len(r.spans()) > 20, timeout_s=20)
            texts = await everything_written(running)
        texts += [repr(span) for span in receiver.spans()]
        texts += logs_in(tmp_path)
    secrets = [spec["secret"] for spec in keys.values()] + [vault_key] + bank.handed_out()
    assert len(bank.handed_out()) >= 8, "tokens of 3 customers, a refresh and a merchant token"
    assert len(texts) > 50, "there was plenty to search"
    leaks = [(secret[:6], text[:80]) for secret in secrets for text in texts if secret in text]
    assert leaks == []


def logs_in(directory: Path) -> list[str]:
    return [log.read_text(errors="replace") for log in directory.glob("*.log")]


async def everything_written(running: System) -> list[str]:
    """Every record of the system's topics and every row of its saga tables, as text."""
    admin = AIOKafkaAdminClient(**client_kwargs(running.settings, "scan"))
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(running.prefix)]
    finally:
        await admin.close()
    texts = []
    for topic in topics:
        for record in await read_available(running.settings, topic, idle_s=1.5):
            texts.append(repr((record.key, record.value, record.headers)))
    connection = await asyncpg.connect(running.database_url)
    try:
        tables = ("saga_log", "saga_instances", "saga_inbox", "saga_outbox", "saga_connections")
        for table in (*tables, "payment_ledger", "orders"):
            rows = await connection.fetch(f"SELECT * FROM {table}")  # noqa: S608 (fixed names)
            texts += [repr(dict(row)) for row in rows]
    finally:
        await connection.close()
    return texts


async def test_poison_signed_with_a_valid_key_is_a_data_dead_letter_and_the_partition_goes_on(
    infra: Infra, tmp_path: Path
) -> None:
    import secrets

    from contracts.orders import OrderPlaced

    keys = keys_for_everyone()
    specs = parse_keys(keys)
    after = f"after-signed-poison-{uuid.uuid4().hex[:6]}"
    with launch(infra, tmp_path, "coordinator", env=signing(keys)) as running:
        topic = f"{running.prefix}orders.events"

        def placed(**fields: Any) -> Envelope[Message]:
            return Envelope(
                payload=OrderPlaced(order_id=after, customer_id="c", amount_cents=900),
                saga_id=after,
                saga_type="order",
                source="/services/orders",
                **fields,
            )

        template = encode(placed())
        nul = json.dumps({"order_id": after, "customer_id": "c\u0000", "amount_cents": 9})
        too_long = encode(placed(id=secrets.token_urlsafe(6000)))
        orders = Signer(specs, "orders-key")
        async with Publisher(running.settings) as publisher:
            # Signed by the topic's owner with a valid key, keyed as the saga that follows.
            for value, headers in (
                (nul.encode(), template.headers),
                (too_long.value, too_long.headers),
            ):
                signed = orders.sign(topic, template.key, value, headers)
                await publisher.publish_raw(topic, key=template.key, value=value, headers=signed)
        as_orders = running.settings.model_copy(
            update={"signing_keys": specs, "signing_key_id": "orders-key"}
        )
        async with Publisher(as_orders) as publisher:
            await publisher.publish(topic, placed())

        async def opened() -> bool:
            return after in await running.statuses([after])

        await eventually(opened, timeout_s=30, what="the saga after the poison opened")

        async def both() -> bool:
            return len(await read_available(running.settings, f"{topic}.dlq", idle_s=1.5)) >= 2

        await eventually(both, timeout_s=20, what="both poisoned records dead-lettered")
        letters = await read_available(running.settings, f"{topic}.dlq")
        security = await read_available(
            running.settings, f"{running.prefix}{SECURITY_DEAD_LETTERS}", idle_s=1.5
        )
    assert sorted(dict(r.headers)[h.DLQ_ERROR_TYPE].decode() for r in letters) == [
        "PayloadValidationFailed",
        "ProgramLimitExceededError",
    ]
    assert security == [], "a valid signature is not a security refusal"
