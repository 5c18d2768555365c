"""A partition's fetched batch: first attempts share one transaction, each in a savepoint.

Outcomes, writes and emitted events must be exactly those of one delivery at
a time; only the number of transactions differs.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from typing import Any

import asyncpg

from contracts.inventory import InventoryReserved
from contracts.payment import PaymentCharged, PaymentFailed
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.participant.service import Service, StepContext, StepFailure
from saga.resilience.faults import FaultRule, Faults, Verdict
from saga.resilience.retry import RetryPolicy
from saga.testing import ServiceTestKit
from tests.conftest import Infra


def reserved(order_id: str) -> Envelope[Message]:
    return Envelope(
        payload=InventoryReserved(order_id=order_id, sku="s", quantity=1, amount_cents=500),
        saga_id=order_id,
        source="/tests",
    )


def charging_service(table: str) -> Service:
    """Charges write a row; the order id says how the handler behaves."""
    service = Service(
        f"pay{uuid.uuid4().hex[:6]}",
        store="postgres",
        schema=(f"CREATE TABLE IF NOT EXISTS {table} (order_id text PRIMARY KEY)",),
        retry=RetryPolicy(maximum_attempts=3),
    )
    tried: set[str] = set()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(event: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        order = event.order_id
        first_try = order not in tried
        tried.add(order)
        await ctx.db.execute(f"INSERT INTO {table} VALUES ($1)", order)  # noqa: S608
        if order.startswith("declined"):
            raise StepFailure("card declined after writing", error_type="Declined")
        if order.startswith("flaky") and first_try:
            raise ConnectionError("bank unreachable")
        if order.startswith("careless") and first_try:
            # Catches a database error and goes on: the transaction is aborted.
            with contextlib.suppress(asyncpg.UndefinedTableError):
                await ctx.db.execute("SELECT * FROM no_such_table")
        return PaymentCharged(order_id=order, amount_cents=500, charge_id=f"c-{order}")

    return service


async def inbox(infra: Infra, service: str) -> list[tuple[str, str, int, int]]:
    """(message id, outcome, attempts, transaction id) of every inbox row."""
    connection = await asyncpg.connect(infra.database_url)
    try:
        rows = await connection.fetch(
            "SELECT message_id, outcome, attempts, xmin::text::bigint AS tx FROM saga_inbox"
            " WHERE service = $1",
            service,
        )
        return [(r["message_id"], r["outcome"], r["attempts"], r["tx"]) for r in rows]
    finally:
        await connection.close()


async def written(infra: Infra, table: str) -> set[str]:
    connection = await asyncpg.connect(infra.database_url)
    try:
        return {r["order_id"] for r in await connection.fetch(f"SELECT order_id FROM {table}")}  # noqa: S608
    finally:
        await connection.close()


async def test_a_batch_of_good_deliveries_commits_in_one_transaction(infra: Infra) -> None:
    table = f"charges_{uuid.uuid4().hex[:8]}"
    service = charging_service(table)
    batch = [reserved(f"ok-{i}") for i in range(5)]
    async with ServiceTestKit(service, database_url=infra.database_url) as kit:
        outcomes = await kit.deliver_batch(batch)
    assert [o.kind for o in outcomes] == ["completed"] * 5
    rows = await inbox(infra, service.name)
    assert {r[0] for r in rows} == {e.id for e in batch}
    assert len({r[3] for r in rows}) == 1, "one transaction for the whole batch"
    assert await written(infra, table) == {f"ok-{i}" for i in range(5)}
    assert [e.saga_id for e in kit.emitted()] == [f"ok-{i}" for i in range(5)]
    assert [e.causation_id for e in kit.emitted()] == [e.id for e in batch]


async def test_failures_retries_and_duplicates_in_a_batch_end_as_one_at_a_time(
    infra: Infra,
) -> None:
    table = f"charges_{uuid.uuid4().hex[:8]}"
    service = charging_service(table)
    a, declined, c = reserved("ok-a"), reserved("declined-b"), reserved("ok-c")
    flaky, e, careless, g = (
        reserved("flaky-d"),
        reserved("ok-e"),
        reserved("careless-f"),
        reserved("ok-g"),
    )
    batch = [a, declined, c, a, flaky, e, careless, g, a]
    async with ServiceTestKit(service, database_url=infra.database_url) as kit:
        outcomes = await kit.deliver_batch(batch)
        again = await kit.deliver_batch([c, g])
    assert [(o.kind, o.attempts) for o in outcomes] == [
        ("completed", 1),
        ("failed", 1),
        ("completed", 1),
        ("duplicate", 0),
        ("completed", 2),  # retried alone after its backoff
        ("completed", 1),
        ("completed", 2),  # its aborted first attempt was thrown away
        ("completed", 1),
        ("duplicate", 0),
    ]
    assert [o.kind for o in again] == ["duplicate", "duplicate"]
    assert len(kit.delays) == 2, "one backoff each for flaky and careless"

    # The declined charge's write was rolled back with its savepoint; the others stay.
    assert await written(infra, table) == {"ok-a", "ok-c", "flaky-d", "ok-e", "careless-f", "ok-g"}
    emitted = [(m.type, m.saga_id) for m in kit.emitted()]
    assert emitted == [
        ("payment.PaymentCharged", "ok-a"),
        ("payment.PaymentFailed", "declined-b"),
        ("payment.PaymentCharged", "ok-c"),
        ("payment.PaymentCharged", "flaky-d"),
        ("payment.PaymentCharged", "ok-e"),
        ("payment.PaymentCharged", "careless-f"),
        ("payment.PaymentCharged", "ok-g"),
    ]

    rows = {r[0]: r for r in await inbox(infra, service.name)}
    assert len(rows) == 7
    assert rows[declined.id][1:3] == ("failed", 1)
    assert rows[flaky.id][1:3] == ("completed", 2)
    # a, declined and c share a transaction; flaky runs alone; e starts the next one,
    # careless runs alone, g starts another.
    tx = {name: rows[m.id][3] for name, m in {"a": a, "b": declined, "c": c}.items()}
    assert tx["a"] == tx["b"] == tx["c"]
    assert len({tx["a"], rows[flaky.id][3], rows[e.id][3], rows[careless.id][3]}) == 4
    assert rows[g.id][3] not in {tx["a"], rows[flaky.id][3], rows[e.id][3], rows[careless.id][3]}


class CountedFaults(Faults):
    """Delays every charge by a millisecond and counts how often each was decided."""

    def __init__(self) -> None:
        super().__init__([FaultRule(step="charge", action="delay", delay_ms=1)])
        self.decided: Counter[str] = Counter()

    async def apply(self, step: str, message_id: str, payload: dict[str, Any]) -> Verdict:
        self.decided[message_id] += 1
        return await super().apply(step, message_id, payload)


async def test_a_fault_is_decided_once_per_delivery_when_a_retry_splits_the_batch(
    infra: Infra,
) -> None:
    table = f"charges_{uuid.uuid4().hex[:8]}"
    faults = CountedFaults()
    batch = [reserved("ok-a"), reserved("flaky-b"), reserved("ok-c"), reserved("ok-d")]
    async with ServiceTestKit(
        charging_service(table), database_url=infra.database_url, faults=faults
    ) as kit:
        outcomes = await kit.deliver_batch(batch)
    assert [(o.kind, o.attempts) for o in outcomes] == [
        ("completed", 1),
        ("completed", 2),
        ("completed", 1),
        ("completed", 1),
    ]
    assert faults.decided == {e.id: 1 for e in batch}, "delays are slept once, not per batch"


async def test_a_batch_runs_without_savepoints_until_a_handler_fails_then_with_them(
    infra: Infra,
) -> None:
    table = f"charges_{uuid.uuid4().hex[:8]}"
    service = Service(
        f"pay{uuid.uuid4().hex[:6]}",
        store="postgres",
        schema=(f"CREATE TABLE IF NOT EXISTS {table} (order_id text PRIMARY KEY)",),
    )
    calls: Counter[str] = Counter()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(event: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        calls[event.order_id] += 1
        await ctx.db.execute(f"INSERT INTO {table} VALUES ($1)", event.order_id)  # noqa: S608
        if event.order_id.startswith("declined"):
            raise StepFailure("card declined after writing", error_type="Declined")
        return PaymentCharged(order_id=event.order_id, amount_cents=500, charge_id="c")

    async with ServiceTestKit(service, database_url=infra.database_url) as kit:
        first = await kit.deliver_batch([reserved("ok-1"), reserved("ok-2")])
        assert dict(calls) == {"ok-1": 1, "ok-2": 1}, "no failure: one run each"
        # Without savepoints the declined charge's write can only be undone with the
        # whole transaction: the batch runs again with savepoints. The charge before it
        # runs again (its first run was rolled back); the declined one does not.
        second = await kit.deliver_batch(
            [reserved("ok-3"), reserved("declined-4"), reserved("ok-5")]
        )
        assert dict(calls) == {"ok-1": 1, "ok-2": 1, "ok-3": 2, "declined-4": 1, "ok-5": 1}
        # For a while after, batches take savepoints from the start: a failure undoes
        # only its own delivery, and nothing runs twice.
        third = await kit.deliver_batch([reserved("ok-6"), reserved("declined-7")])
        assert calls["ok-6"] == calls["declined-7"] == 1
    assert [o.kind for o in first] == ["completed", "completed"]
    assert [(o.kind, o.attempts) for o in second] == [
        ("completed", 1),
        ("failed", 1),
        ("completed", 1),
    ]
    assert [o.kind for o in third] == ["completed", "failed"]
    # Each effect once: the declined charges' writes undone, the others kept once.
    assert await written(infra, table) == {"ok-1", "ok-2", "ok-3", "ok-5", "ok-6"}
    rows = {r[0]: r for r in await inbox(infra, service.name)}
    assert len(rows) == 7
