"""Whole sagas in one process: the coordinator's decisions and the example's own services,
their handlers on real PostgreSQL stores, over in-memory topics (no broker)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from contracts.order_saga import ORDER_SAGA
from contracts.orders import OrderPlaced
from saga import Service
from saga.testing import InMemorySagaSystem
from services.inventory.service import service as inventory
from services.notification.service import service as notification
from services.orders.service import service as orders
from services.payment.service import service as payment
from services.shipping.service import service as shipping
from tests.conftest import Infra
from tests.trips.messages import TripRequested
from tests.trips.sagas import TRIP_V1
from tests.trips.services import SERVICES as TRIP_SERVICES

pytestmark = pytest.mark.integration

SERVICES: list[Service] = [orders, inventory, payment, shipping, notification]
#: Well under a second per saga, start-up of the stores aside.
PER_SAGA_S = 1.0


@pytest.fixture
async def system(infra: Infra) -> AsyncIterator[InMemorySagaSystem]:
    async with InMemorySagaSystem(ORDER_SAGA, SERVICES, database_url=infra.database_url) as system:
        yield system


async def place(system: InMemorySagaSystem, database_url: str, placed: OrderPlaced) -> str:
    """Store the order as the orders service's ``POST /orders`` would, and start its saga."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO orders (order_id, customer_id, sku, quantity, amount_cents, currency)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            placed.order_id,
            placed.customer_id,
            placed.sku,
            placed.quantity,
            placed.amount_cents,
            placed.currency,
        )
    finally:
        await connection.close()
    await system.start_saga(placed, saga_id=placed.order_id)
    return placed.order_id


def order(order_id: str, amount_cents: int, sku: str = "sku-1") -> OrderPlaced:
    return OrderPlaced(order_id=order_id, customer_id="c-1", amount_cents=amount_cents, sku=sku)


async def fetchval(database_url: str, query: str, *args: object) -> object:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


async def test_an_order_runs_every_step_and_completes(
    system: InMemorySagaSystem, infra: Infra
) -> None:
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    await place(system, infra.database_url, order(order_id, 900))
    await system.run_until_quiet()
    took = time.perf_counter() - started
    assert took < PER_SAGA_S, f"{took:.3f}s"

    state = system.state(order_id)
    assert state.status == "completed"
    assert [s.status for s in state.steps.values()] == ["completed"] * 4
    assert [e.type for e in system.messages(order_id)] == [
        "orders.OrderPlaced",
        "inventory.InventoryReserved",
        "payment.PaymentCharged",
        "shipping.OrderShipped",
        "shipping.OrderShipped",  # sent on by the coordinator: notifying cannot be undone
        "notification.CustomerNotified",
        "saga.SagaFinished",
    ]
    assert system.timers(order_id) == {}
    # The services' own tables, written in their deliveries' transactions.
    assert (
        await fetchval(
            infra.database_url, "SELECT count(*) FROM shipments WHERE order_id = $1", order_id
        )
        == 1
    )
    # The orders service heard the outcome (saga.SagaFinished) and confirmed the order.
    assert (
        await fetchval(
            infra.database_url, "SELECT status FROM orders WHERE order_id = $1", order_id
        )
        == "confirmed"
    )


async def test_a_declined_payment_releases_the_stock_and_cancels_the_order(
    system: InMemorySagaSystem, infra: Infra
) -> None:
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    stock = "SELECT available FROM inventory_stock WHERE sku = 'sku-2'"
    before = await fetchval(infra.database_url, stock)
    started = time.perf_counter()
    # Over the card limit of the example's bank, under the warehouse's limit.
    await place(system, infra.database_url, order(order_id, 60_000, sku="sku-2"))
    await system.run_until_quiet()
    took = time.perf_counter() - started
    assert took < PER_SAGA_S, f"{took:.3f}s"

    state = system.state(order_id)
    assert state.status == "compensated"
    assert state.steps["charge"].status == "failed"
    assert state.reason is not None and "CardDeclined" in state.reason
    assert [e.type for e in system.messages(order_id)] == [
        "orders.OrderPlaced",
        "inventory.InventoryReserved",
        "payment.PaymentFailed",
        "inventory.ReleaseInventory",
        "inventory.InventoryReleased",
        "saga.SagaFinished",
    ]
    assert await fetchval(infra.database_url, stock) == before, "the stock is back"
    assert (
        await fetchval(
            infra.database_url, "SELECT status FROM orders WHERE order_id = $1", order_id
        )
        == "cancelled"
    )


async def test_a_shipping_failure_refunds_then_releases(
    system: InMemorySagaSystem, infra: Infra
) -> None:
    order_id = f"nowhere-{uuid.uuid4().hex[:8]}"  # no carrier ships there
    await place(system, infra.database_url, order(order_id, 900))
    await system.run_until_quiet()
    assert system.state(order_id).status == "compensated"
    commands = [e.type for e in system.messages(order_id) if e.payload.kind == "command"]
    assert commands == ["payment.RefundPayment", "inventory.ReleaseInventory"]
    refunds = "SELECT count(*) FROM payment_ledger WHERE order_id = $1 AND kind = 'refund'"
    assert await fetchval(infra.database_url, refunds, order_id) == 1


async def test_many_orders_take_well_under_a_second_each(
    system: InMemorySagaSystem, infra: Infra
) -> None:
    run = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    for n in range(10):
        await system.start_saga(
            OrderPlaced(order_id=f"o-{run}-{n}", customer_id="c-1", amount_cents=900),
            saga_id=f"o-{run}-{n}",
        )
    await system.run_until_quiet()
    took = time.perf_counter() - started
    assert all(system.state(f"o-{run}-{n}").status == "completed" for n in range(10))
    assert took / 10 < PER_SAGA_S / 4, f"{took / 10:.3f}s per saga"


async def test_the_trip_saga_branches_joins_waits_for_approval_and_completes(
    infra: Infra,
) -> None:
    trip_id = f"t-{uuid.uuid4().hex[:8]}.fail-hotel"  # no hotel: a hostel instead
    async with InMemorySagaSystem(
        TRIP_V1, list(TRIP_SERVICES.values()), database_url=infra.database_url
    ) as system:
        await system.start_saga(TripRequested(trip_id=trip_id), saga_id=trip_id)
        await system.run_until_quiet()
        state = system.state(trip_id)
        assert (state.steps["hotel"].status, state.steps["hostel"].status) == (
            "failed",
            "completed",
        )
        assert state.steps["approve"].status == "running"
        [opened] = system.tasks(trip_id)
        assert (opened.change, opened.assignee) == ("opened", "manager")

        await system.advance(timedelta(seconds=3))  # the SLA passes: the director decides
        assert system.state(trip_id).steps["approve"].assignee == "director"
        await system.operate(trip_id, "approve:approve", actor="director")
        await system.run_until_quiet()
        assert system.state(trip_id).status == "completed"
        assert [t.change for t in system.tasks(trip_id)] == ["opened", "escalated", "approved"]
