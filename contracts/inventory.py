"""Contracts of the inventory service: reserve stock for an order, release it."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from contracts.orders import OrderPlaced
from saga import Command, Event, StepContract, StepFailed


class InventoryReserved(Event):
    message_type: ClassVar[str] = "inventory.InventoryReserved"

    order_id: str = Field(min_length=1)
    sku: str
    quantity: int = Field(gt=0)
    amount_cents: int = Field(gt=0, description="Order amount, for the payment step.")
    #: Carried over from the order, for the payment step (see ``OrderPlaced``).
    payment_connection: str | None = Field(default=None, min_length=1, max_length=100)
    #: Whose order it is: a bank connection is used only for its owner's orders.
    customer_id: str | None = Field(default=None, min_length=1, max_length=100)


class InventoryReservationFailed(StepFailed):
    message_type: ClassVar[str] = "inventory.InventoryReservationFailed"


class ReleaseInventory(Command):
    """Compensation of the reservation."""

    message_type: ClassVar[str] = "inventory.ReleaseInventory"

    order_id: str = Field(min_length=1)


class InventoryReleased(Event):
    message_type: ClassVar[str] = "inventory.InventoryReleased"

    order_id: str = Field(min_length=1)
    #: False when there was nothing to release (never reserved, or already released).
    released: bool


#: Reserve the order's stock; release it to undo.
RESERVE = StepContract(
    trigger=OrderPlaced,
    completion=InventoryReserved,
    failure=InventoryReservationFailed,
    compensation=ReleaseInventory,
    compensated=InventoryReleased,
)
