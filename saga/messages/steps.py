"""Contract shapes every step shares: failure events and the compensation outcome.

A step's failure event subclasses :class:`StepFailed`, so the SDK can emit it
by itself when retries are exhausted or an error is not retryable::

    class PaymentFailed(StepFailed):
        message_type: ClassVar[str] = "payment.PaymentFailed"

A compensation that keeps failing is announced as :class:`CompensationFailed`
on the service's events topic, so the coordinator can park the saga.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from saga.messages.base import Event


class StepFailed(Event):
    """Base of failure events: why the step failed, without stack traces or secrets."""

    message_type: ClassVar[str] = "saga.StepFailed"

    error_type: str = Field(description="Exception type name, or a business error code.")
    error_message: str = Field(default="", max_length=1000)
    attempts: int = Field(default=1, ge=1, description="Attempts made before giving up.")


class CompensationFailed(Event):
    """A compensation command could not be carried out; an operator must look."""

    message_type: ClassVar[str] = "saga.CompensationFailed"

    command_type: str
    error_type: str
    error_message: str = Field(default="", max_length=1000)
    attempts: int = Field(ge=1)
