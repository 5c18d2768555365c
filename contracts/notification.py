"""Contracts of the notification service: the customer's final confirmation."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from contracts.shipping import OrderShipped
from saga import Event, StepContract, StepFailed


class CustomerNotified(Event):
    """The confirmation went out: the last step of the order saga."""

    message_type: ClassVar[str] = "notification.CustomerNotified"

    order_id: str = Field(min_length=1)
    parcel_id: str
    channel: str = "email"
    notification_id: str


class NotificationFailed(StepFailed):
    message_type: ClassVar[str] = "notification.NotificationFailed"


#: Tell the customer: a sent message stays sent, so there is nothing to undo.
NOTIFY = StepContract(trigger=OrderShipped, completion=CustomerNotified, failure=NotificationFailed)
