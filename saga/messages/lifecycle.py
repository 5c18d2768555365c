"""What the coordinator announces about sagas, on the ``saga.events`` topic.

Also the shapes of approval outcomes: a saga's approval step names events of
its own that subclass :class:`TaskApproved` and :class:`TaskRejected` (named
``saga.<Name>``); the coordinator fills their other fields from saga data.

Any service may subscribe; the orders service uses it to show an order's
outcome. The envelope's saga id names the saga.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from saga.messages.base import Event

SagaOutcome = Literal["completed", "compensated", "parked", "resolved"]


class SagaFinished(Event):
    """A saga reached an outcome (``parked`` waits for an operator and may change)."""

    message_type: ClassVar[str] = "saga.SagaFinished"

    saga_type: str
    status: SagaOutcome
    #: Why it compensated or parked (the failure, timeout or deadline).
    reason: str | None = None


class TaskOpened(Event):
    """An approval step is waiting for ``assignee``: tell them (a mail, a chat message)."""

    message_type: ClassVar[str] = "saga.TaskOpened"

    task_id: str
    step: str
    assignee: str
    sla_due: datetime
    deadline: datetime


class TaskEscalated(Event):
    """An approval task passed its SLA and went to the next assignee."""

    message_type: ClassVar[str] = "saga.TaskEscalated"

    task_id: str
    step: str
    from_assignee: str | None
    to_assignee: str
    escalations: int


class TaskApproved(Event):
    """Base of an approval step's completion event."""

    message_type: ClassVar[str] = "saga.TaskApproved"

    task_id: str
    decided_by: str
    reason: str | None = None


class TaskRejected(Event):
    """Base of an approval step's rejection event (the saga compensates)."""

    message_type: ClassVar[str] = "saga.TaskRejected"

    task_id: str
    decided_by: str
    reason: str | None = None


class CancelRequested(Event):
    """Base of the event that asks to cancel a saga: the saga's definition names it
    (``cancelled_by``), the service that started the saga publishes it on its own
    events topic (``ctx.cancel_saga``), in the saga (its envelope's saga id)::

        class OrderCancelled(CancelRequested):
            message_type: ClassVar[str] = "orders.OrderCancelled"
            order_id: str
    """

    message_type: ClassVar[str] = "saga.CancelRequested"

    reason: str = Field(min_length=1, max_length=1000)
    #: The person who asked (the signed-in customer or clerk), for the saga log.
    requested_by: str | None = Field(default=None, max_length=200)


class CancelRefused(Event):
    """A cancel came too late: the saga finished, is compensating, or its pivot started
    (it only goes forward). Published for whoever asked, on ``saga.events``."""

    message_type: ClassVar[str] = "saga.CancelRefused"

    saga_type: str
    reason: str
    requested_by: str | None = None
