"""The PostgreSQL inbox/outbox through the test kit: one transaction per delivery."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence

import asyncpg
import pytest
from aiokafka.errors import KafkaTimeoutError

from contracts.inventory import InventoryReserved
from contracts.payment import PaymentCharged, PaymentFailed
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Published, Publisher
from saga.messages.codec import EncodedRecord, Headers
from saga.outbox.relay import OutboxRelay
from saga.outbox.send_order import Written
from saga.outbox.store import PostgresServiceStore
from saga.participant.service import Service, StepContext, StepFailure
from saga.resilience.retry import RetryPolicy
from saga.settings import Settings
from saga.testing import ServiceTestKit
from tests.conftest import Infra
from tests.kafka_helpers import read_records

RESERVED = InventoryReserved(order_id="o-1", sku="s", quantity=1, amount_cents=500)


def service_with_table() -> tuple[Service, str]:
    table = f"charges_{uuid.uuid4().hex[:8]}"
    service = Service(
        f"pay{uuid.uuid4().hex[:6]}",
        store="postgres",
        schema=(f"CREATE TABLE IF NOT EXISTS {table} (order_id text PRIMARY KEY)",),
        retry=RetryPolicy(maximum_attempts=3),
    )
    return service, table


async def unsent_rows(store: PostgresServiceStore) -> int:
    count: int = await store.pool.fetchval(
        "SELECT count(*) FROM saga_outbox WHERE service = $1 AND sent_at IS NULL", store.service
    )
    return count


async def rows(infra: Infra, table: str) -> int:
    connection = await asyncpg.connect(infra.database_url)
    try:
        count: int = await connection.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
        return count
    finally:
        await connection.close()


async def test_handler_writes_commit_with_the_inbox_and_the_outbox(infra: Infra) -> None:
    service, table = service_with_table()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        await ctx.db.execute(f"INSERT INTO {table} VALUES ($1)", reserved.order_id)  # noqa: S608
        return PaymentCharged(order_id=reserved.order_id, amount_cents=500, charge_id="c")

    async with ServiceTestKit(service, database_url=infra.database_url) as kit:
        first = await kit.send(RESERVED, saga_id="o-1")
        again = await kit.deliver(kit.transport.read("inventory.events", service)[0])
    assert (first.kind, again.kind) == ("completed", "duplicate")
    assert await rows(infra, table) == 1
    assert [e.type for e in kit.emitted()] == ["payment.PaymentCharged"]


async def test_a_step_failure_rolls_back_the_handlers_writes(infra: Infra) -> None:
    service, table = service_with_table()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> None:
        await ctx.db.execute(f"INSERT INTO {table} VALUES ($1)", reserved.order_id)  # noqa: S608
        raise StepFailure("declined after writing", error_type="Declined")

    async with ServiceTestKit(service, database_url=infra.database_url) as kit:
        outcome = await kit.send(RESERVED, saga_id="o-1")
    assert outcome.kind == "failed"
    assert await rows(infra, table) == 0
    assert [e.type for e in kit.emitted()] == ["payment.PaymentFailed"]


@pytest.mark.parametrize("emits", [True, False], ids=["found by the outbox write", "alone"])
async def test_a_handler_that_swallows_a_database_error_is_caught_not_silently_lost(
    infra: Infra, emits: bool
) -> None:
    service, table = service_with_table()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged | None:
        insert = f"INSERT INTO {table} VALUES ($1)"  # noqa: S608
        for _ in range(2):  # the second insert violates the key; the error is swallowed
            with contextlib.suppress(asyncpg.UniqueViolationError):
                await ctx.db.execute(insert, reserved.order_id)
        if not emits:
            return None
        return PaymentCharged(order_id=reserved.order_id, amount_cents=500, charge_id="c")

    async with ServiceTestKit(service, database_url=infra.database_url) as kit:
        outcome = await kit.send(RESERVED, saga_id="o-1")
    assert (outcome.kind, outcome.attempts) == ("failed", 3)
    failure = kit.emitted()[0].payload
    assert isinstance(failure, PaymentFailed)
    assert failure.error_type == "AbortedTransaction"
    assert await rows(infra, table) == 0


@pytest.mark.parametrize("keep_sent", [False, True], ids=["sent-deleted", "sent-kept"])
async def test_relay_parks_a_row_the_broker_cannot_take_and_sends_the_rest(
    infra: Infra, settings: Settings, unique: Callable[[str], str], keep_sent: bool
) -> None:
    topic = unique("payment.events")
    await ensure_topics(settings, [topic], partitions=1)
    store = PostgresServiceStore(
        infra.database_url, f"relay{uuid.uuid4().hex[:6]}", keep_sent=keep_sent
    )
    await store.start()
    try:
        async with store.pool.acquire() as connection, connection.transaction():
            written = await store.write_outbox(
                connection,
                [
                    (topic, EncodedRecord(b"s-1", b"first", [("n", b"1")])),
                    (topic, EncodedRecord(b"s-2", b"x" * 10_000, [("n", b"2")])),
                    (topic, EncodedRecord(b"s-3", b"third", [("n", b"3")])),
                ],
            )
        tight = settings.model_copy(update={"max_message_bytes": 4096})
        async with Publisher(tight) as publisher:
            relay = OutboxRelay(store, publisher)
            assert await relay.publish_pending() == 3
            assert await relay.publish_pending() == 0, "nothing left to retry"
        states = await store.pool.fetch(
            "SELECT w.id, o.id IS NOT NULL AS kept, o.sent_at IS NOT NULL AS sent,"
            " o.parked_reason FROM unnest($1::bigint[]) AS w(id)"
            " LEFT JOIN saga_outbox o ON o.id = w.id ORDER BY w.id",
            [row.id for row in written],
        )
    finally:
        await store.stop()
    # Sent rows are deleted once the broker has them, or kept marked sent; the parked
    # row stays either way, unsent, with its reason.
    sent = (True, True, False) if keep_sent else (False, False, False)
    assert [(r["kept"], r["sent"], r["parked_reason"] is not None) for r in states] == [
        sent,
        (True, False, True),
        sent,
    ]
    assert "over the limit of 4096 bytes" in states[1]["parked_reason"]
    records = await read_records(settings, topic, 2)
    assert [r.value for r in records] == [b"first", b"third"]


async def test_publishing_after_commit_holds_back_a_row_while_an_older_one_of_its_saga_waits(
    infra: Infra, settings: Settings, unique: Callable[[str], str]
) -> None:
    topic = unique("t.events")
    await ensure_topics(settings, [topic], partitions=1)
    store = PostgresServiceStore(infra.database_url, f"order{uuid.uuid4().hex[:6]}")
    await store.start()

    def record(key: bytes | None, value: bytes) -> tuple[str, EncodedRecord]:
        return topic, EncodedRecord(key, value, [])  # type: ignore[arg-type]

    try:
        async with Publisher(settings) as publisher:
            relay = OutboxRelay(store, publisher)
            # Committed but not sent, as after a crash before the publish.
            async with store.pool.acquire() as connection, connection.transaction():
                [older] = await store.write_outbox(connection, [record(b"s-1", b"older")])
            async with store.pool.acquire() as connection, connection.transaction():
                written = await store.write_outbox(
                    connection,
                    [
                        record(b"s-1", b"newer"),
                        record(b"s-2", b"other"),
                        record(None, b"no key"),
                        record(b"s-1", b"newest"),
                    ],
                )
            newer, other, keyless, newest = written
            assert newer.waits_for == (older.id,)
            assert other.waits_for == keyless.waits_for == ()
            assert newest.waits_for == (older.id,), "rows of one write are not waited for"

            assert await relay.publish(written) == 2
            assert relay.order.held == [newer.id, newest.id]
            # The relay takes over what is left, oldest first.
            assert await relay.publish_pending() == 3
            assert relay.order.held == []
            unsent = await unsent_rows(store)
    finally:
        await store.stop()
    assert unsent == 0
    records = await read_records(settings, topic, 5)
    assert [r.value for r in records] == [b"other", b"no key", b"older", b"newer", b"newest"]


class _GatedPublisher(Publisher):
    """Holds back a handover carrying ``b"first"`` (``holding`` is set meanwhile) until
    ``gate`` is set, then sends it, or fails it once when ``fail`` is true."""

    def __init__(self, settings: Settings, *, fail: bool) -> None:
        super().__init__(settings)
        self.holding = asyncio.Event()
        self.gate = asyncio.Event()
        self.fail = fail

    async def publish_raw_many(
        self, records: Sequence[tuple[str, bytes | None, bytes | None, Headers]]
    ) -> list[Published]:
        if any(value == b"first" for _, _, value, _ in records):
            self.holding.set()
            await self.gate.wait()
            if self.fail:
                self.fail = False
                raise KafkaTimeoutError("no acknowledgement")
        return await super().publish_raw_many(records)


@pytest.mark.parametrize("acknowledged", [True, False], ids=["acknowledged", "failed"])
async def test_a_row_whose_predecessor_is_in_flight_elsewhere_goes_after_its_acknowledgement(
    infra: Infra, settings: Settings, unique: Callable[[str], str], acknowledged: bool
) -> None:
    topic = unique("t.events")
    await ensure_topics(settings, [topic], partitions=1)
    store = PostgresServiceStore(infra.database_url, f"ack{uuid.uuid4().hex[:6]}")
    await store.start()

    async def commit(value: bytes) -> Written:
        async with store.pool.acquire() as connection, connection.transaction():
            [written] = await store.write_outbox(
                connection, [(topic, EncodedRecord(b"s-1", value, []))]
            )
        return written

    try:
        async with _GatedPublisher(settings, fail=not acknowledged) as publisher:
            relay = OutboxRelay(store, publisher)
            first = await commit(b"first")
            handing_over = asyncio.create_task(relay.publish([first]))
            await asyncio.wait_for(publisher.holding.wait(), 10)  # the first is in flight
            second = await commit(b"second")
            assert second.waits_for == (first.id,)
            assert await relay.publish([second]) == 0, "the first is not acknowledged yet"
            assert relay.order.held == [second.id]
            publisher.gate.set()
            if acknowledged:
                assert await handing_over == 2, "the second went once the first was acknowledged"
                assert await unsent_rows(store) == 2, "marked by the relay's next pass"
                assert await relay.mark_acknowledged() == 2
            else:
                with pytest.raises(KafkaTimeoutError):
                    await handing_over
                assert relay.order.held == [second.id], "not sent behind a failed handover"
                assert await relay.publish_pending() == 2
            unsent = await unsent_rows(store)
    finally:
        await store.stop()
    assert unsent == 0
    records = await read_records(settings, topic, 2)
    assert [r.value for r in records] == [b"first", b"second"]
