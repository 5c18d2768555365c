"""What the web front end announces: someone asked for an account."""

from typing import ClassVar

from saga import Event


class SignupRequested(Event):
    message_type: ClassVar[str] = "web.SignupRequested"

    account_id: str
    email: str
    plan: str
