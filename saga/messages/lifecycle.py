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
