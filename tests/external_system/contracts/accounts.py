"""The accounts service: open an account for a signup, close it to undo."""

from typing import ClassVar

from saga import Command, Event, StepContract, StepFailed

from contracts.web import SignupRequested


class AccountCreated(Event):
    message_type: ClassVar[str] = "accounts.AccountCreated"

    account_id: str
    email: str
    plan: str


class AccountCreationFailed(StepFailed):
    message_type: ClassVar[str] = "accounts.AccountCreationFailed"


class CloseAccount(Command):
    message_type: ClassVar[str] = "accounts.CloseAccount"

    account_id: str


class AccountClosed(Event):
    message_type: ClassVar[str] = "accounts.AccountClosed"

    account_id: str
    closed: bool


OPEN_ACCOUNT = StepContract(
    trigger=SignupRequested,
    completion=AccountCreated,
    failure=AccountCreationFailed,
    compensation=CloseAccount,
    compensated=AccountClosed,
)
