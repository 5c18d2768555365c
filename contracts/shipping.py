"""Contracts of the shipping service: ship a paid order, cancel the shipment."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from contracts.payment import PaymentCharged
from saga import Command, Event, StepContract, StepFailed


class OrderShipped(Event):
    message_type: ClassVar[str] = "shipping.OrderShipped"

    order_id: str = Field(min_length=1)
    parcel_id: str


class ShippingFailed(StepFailed):
    message_type: ClassVar[str] = "shipping.ShippingFailed"


class CancelShipment(Command):
    """Compensation of the shipment."""

    message_type: ClassVar[str] = "shipping.CancelShipment"

    order_id: str = Field(min_length=1)


class ShipmentCancelled(Event):
    message_type: ClassVar[str] = "shipping.ShipmentCancelled"

    order_id: str = Field(min_length=1)
    #: False when there was nothing to cancel (never shipped, or already cancelled).
    cancelled: bool


#: Ship the paid order; cancel the shipment to undo.
SHIP = StepContract(
    trigger=PaymentCharged,
    completion=OrderShipped,
    failure=ShippingFailed,
    compensation=CancelShipment,
    compensated=ShipmentCancelled,
)
