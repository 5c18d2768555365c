"""A step's contract: its messages, declared once, bound by the saga and by the service.

A step is started by one message (its trigger), completes with one event, fails
with one event, and, if it can be undone, has a compensation command confirmed
by one event. The contract names them once, beside the messages themselves;
the saga definition and the service's handlers both refer to it::

    CHARGE = StepContract(
        trigger=InventoryReserved,
        completion=PaymentCharged,
        failure=PaymentFailed,
        compensation=RefundPayment,
        compensated=PaymentRefunded,
    )

    # the saga:     Step("charge", CHARGE, reply_timeout=timedelta(seconds=30))
    # the service:  @service.step(CHARGE)        async def charge(reserved: InventoryReserved, ...)
    #               @service.compensation(CHARGE) async def refund(command: RefundPayment, ...)

The step's service is the owner of its completion (``payment.PaymentCharged`` ->
``payment``). A contract without a trigger leaves it to the saga: the step is
started by the previous step's completion, and the handler's first parameter
names what it reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from saga.messages.base import Command, Event, Message
from saga.messages.steps import StepFailed
from saga.messages.topics import owner_of


@dataclass(frozen=True)
class StepContract:
    """The messages of one step. See the module's docstring."""

    completion: type[Event]
    failure: type[StepFailed] | None = None
    trigger: type[Message] | None = None
    compensation: type[Command] | None = None
    compensated: type[Event] | None = None

    @property
    def service(self) -> str:
        """The service that runs the step: the owner of its completion event."""
        return owner_of(self.completion.message_type)

    @property
    def reversible(self) -> bool:
        return self.compensation is not None

    def problems(self) -> list[str]:
        """What is inconsistent within the contract itself (empty when sound)."""
        where = f"contract of {self.completion.__name__}"
        found: list[str] = []
        for role, model in (("failure", self.failure), ("compensated", self.compensated)):
            if model is not None and owner_of(model.message_type) != self.service:
                found.append(
                    f"{where}: {role} {model.message_type!r} is not an event of service"
                    f" {self.service!r} (events are named <service>.<Name>)"
                )
        if self.compensation is not None and owner_of(self.compensation.message_type) != (
            self.service
        ):
            found.append(
                f"{where}: compensation {self.compensation.message_type!r} is not a command"
                f" of service {self.service!r}"
            )
        if (self.compensation is None) != (self.compensated is None):
            found.append(
                f"{where}: a compensation command and the event confirming it go together"
                " (give both or neither)"
            )
        return found
