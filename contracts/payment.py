"""Contracts of the payment service: charge an order once stock is reserved, refund it."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from contracts.inventory import InventoryReserved
from saga import Command, Event, StepContract, StepFailed


class PaymentCharged(Event):
    message_type: ClassVar[str] = "payment.PaymentCharged"

    order_id: str = Field(min_length=1)
    amount_cents: int = Field(gt=0)
    charge_id: str


class PaymentFailed(StepFailed):
    message_type: ClassVar[str] = "payment.PaymentFailed"


class RefundPayment(Command):
    """Compensation of the charge."""

    message_type: ClassVar[str] = "payment.RefundPayment"

    order_id: str = Field(min_length=1)


class PaymentRefunded(Event):
    message_type: ClassVar[str] = "payment.PaymentRefunded"

    order_id: str = Field(min_length=1)
    #: False when there was nothing to refund (never charged, or already refunded).
    refunded: bool


#: Charge the order once its stock is reserved; refund it to undo.
CHARGE = StepContract(
    trigger=InventoryReserved,
    completion=PaymentCharged,
    failure=PaymentFailed,
    compensation=RefundPayment,
    compensated=PaymentRefunded,
)
