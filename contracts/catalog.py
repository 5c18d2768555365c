"""Every message model the shipped contracts define, as one registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from saga.messages.base import Message
from saga.messages.lifecycle import SagaFinished
from saga.messages.registry import MessageRegistry
from saga.messages.steps import CompensationFailed, StepFailed

ALL_MESSAGES: tuple[type[Message], ...] = (
    OrderPlaced,
    InventoryReserved,
    InventoryReservationFailed,
    ReleaseInventory,
    InventoryReleased,
    PaymentCharged,
    PaymentFailed,
    RefundPayment,
    PaymentRefunded,
    OrderShipped,
    ShippingFailed,
    CancelShipment,
    ShipmentCancelled,
    CustomerNotified,
    NotificationFailed,
    SagaFinished,
    CompensationFailed,
    StepFailed,
)


def default_registry() -> MessageRegistry:
    """A fresh registry holding every shipped contract."""
    return MessageRegistry(ALL_MESSAGES)


if TYPE_CHECKING:
    from saga.definition.saga import SagaDefinition


def saga_definitions() -> tuple[SagaDefinition, ...]:
    """Every shipped saga definition, validated."""
    from contracts.order_saga import ORDER_SAGA

    return (ORDER_SAGA.validate(),)
