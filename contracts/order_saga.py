"""The order saga: reserve stock, charge the payment, ship the parcel, tell the customer.

Notifying is the last step and cannot be undone (a sent e-mail stays sent): it
is marked irreversible. Step timeouts bound how long the coordinator waits for
an answer before it compensates; the payment step's is longer because the
payment service retries the bank itself.
"""

from __future__ import annotations

from datetime import timedelta

from contracts.inventory import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ReleaseInventory,
)
from contracts.notification import CustomerNotified, NotificationFailed
from contracts.orders import OrderPlaced
from contracts.payment import PaymentCharged, PaymentFailed, PaymentRefunded, RefundPayment
from contracts.shipping import CancelShipment, OrderShipped, ShipmentCancelled, ShippingFailed
from saga.definition.saga import SagaDefinition, StepDefinition

ORDER_SAGA = SagaDefinition(
    name="order",
    description="reserve stock, charge the payment, ship the parcel, tell the customer",
    starts_with=OrderPlaced,
    ends_with=CustomerNotified,
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
            timeout=timedelta(seconds=10),
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
            timeout=timedelta(seconds=10),
        ),
        StepDefinition(
            name="notify",
            service="notification",
            started_by=(OrderShipped,),
            completed_by=(CustomerNotified,),
            failed_by=(NotificationFailed,),
            irreversible=True,
            timeout=timedelta(seconds=10),
        ),
    ),
)

__all__ = ["ORDER_SAGA"]
