"""What the coordinator announces about sagas, on the ``saga.events`` topic.

Any service may subscribe; the orders service uses it to show an order's
outcome. The envelope's saga id names the saga.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from contracts.messages import Event

SagaOutcome = Literal["completed", "compensated", "parked", "resolved"]


class SagaFinished(Event):
    """A saga reached an outcome (``parked`` waits for an operator and may change)."""

    message_type: ClassVar[str] = "saga.SagaFinished"

    saga_type: str
    status: SagaOutcome
    #: Why it compensated or parked (the failure, timeout or deadline).
    reason: str | None = None
