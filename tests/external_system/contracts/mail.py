"""The mail service: the welcome mail, which cannot be unsent."""

from typing import ClassVar

from saga import Event, StepContract, StepFailed

from contracts.payment import PaymentCharged


class WelcomeSent(Event):
    message_type: ClassVar[str] = "mail.WelcomeSent"

    account_id: str


class WelcomeFailed(StepFailed):
    message_type: ClassVar[str] = "mail.WelcomeFailed"


WELCOME = StepContract(trigger=PaymentCharged, completion=WelcomeSent, failure=WelcomeFailed)
