"""The order saga: reserve stock, charge the payment, ship the parcel."""

from __future__ import annotations

from datetime import timedelta

from contracts.inventory import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ReleaseInventory,
)
from contracts.orders import OrderPlaced
from contracts.payment import PaymentCharged, PaymentFailed, PaymentRefunded, RefundPayment
from contracts.sagas import SagaDefinition, StepDefinition
from contracts.shipping import CancelShipment, OrderShipped, ShipmentCancelled, ShippingFailed

ORDER_SAGA = SagaDefinition(
    name="order",
    description="reserve stock, charge the payment, ship the parcel",
    starts_with=OrderPlaced,
    ends_with=OrderShipped,
    deadline=timedelta(minutes=10),
    steps=(
        StepDefinition(
            name="reserve",
            service="inventory",
            started_by=(OrderPlaced,),
            completed_by=(InventoryReserved,),
            failed_by=(InventoryReservationFailed,),
            compensation=ReleaseInventory,
            compensated_by=(InventoryReleased,),
            timeout=timedelta(seconds=30),
        ),
        StepDefinition(
            name="charge",
            service="payment",
            started_by=(InventoryReserved,),
            completed_by=(PaymentCharged,),
            failed_by=(PaymentFailed,),
            compensation=RefundPayment,
            compensated_by=(PaymentRefunded,),
            timeout=timedelta(seconds=30),
        ),
        StepDefinition(
            name="ship",
            service="shipping",
            started_by=(PaymentCharged,),
            completed_by=(OrderShipped,),
            failed_by=(ShippingFailed,),
            compensation=CancelShipment,
            compensated_by=(ShipmentCancelled,),
            timeout=timedelta(seconds=30),
        ),
    ),
)

__all__ = ["ORDER_SAGA"]
