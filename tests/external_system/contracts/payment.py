"""The payment service: charge the plan's first month, refund it to undo.

Its ``payment.PaymentCharged`` is this system's own: same name as in other
systems, a schema of its own.
"""

from typing import ClassVar

from saga import Command, Event, StepContract, StepFailed

from contracts.accounts import AccountCreated


class PaymentCharged(Event):
    message_type: ClassVar[str] = "payment.PaymentCharged"

    account_id: str
    plan: str
    charge_ref: str


class PaymentFailed(StepFailed):
    message_type: ClassVar[str] = "payment.PaymentFailed"


class RefundCharge(Command):
    """Refund the charge the step made: needs its reference, from ``PaymentCharged``."""

    message_type: ClassVar[str] = "payment.RefundCharge"

    account_id: str
    charge_ref: str


class VoidCharges(Command):
    """Refund whatever was charged to an account: the undo when the charge timed out."""

    message_type: ClassVar[str] = "payment.VoidCharges"

    account_id: str


class ChargeRefunded(Event):
    message_type: ClassVar[str] = "payment.ChargeRefunded"

    account_id: str
    refunded: bool


CHARGE = StepContract(
    trigger=AccountCreated,
    completion=PaymentCharged,
    failure=PaymentFailed,
    compensation=RefundCharge,
    compensated=ChargeRefunded,
)
