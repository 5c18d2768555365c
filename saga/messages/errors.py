"""Why a record could not be read as a message.

::

    InvalidMessage                 a record is not a valid enveloped message
    ├── MissingHeader              a required CloudEvents/saga header is absent or empty
    ├── InvalidHeader              a header is present but unreadable (bad time, version...)
    ├── NotJson                    the value is not UTF-8 JSON
    ├── UnknownMessageType         no model is registered for ``ce_type``
    ├── UnknownSchemaVersion       the version is newer than ours, or has no upcaster
    └── PayloadValidationFailed    the JSON does not fit the model

Each carries a ``reason`` fit for a dead-letter header: what was wrong, never
the payload itself.
"""

from __future__ import annotations

from saga.errors import SagaError


class InvalidMessage(SagaError, ValueError):
    """A record that is not a valid enveloped message. Never retried: dead-lettered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MissingHeader(InvalidMessage):
    def __init__(self, header: str) -> None:
        super().__init__(f"missing required header {header!r}")
        self.header = header


class InvalidHeader(InvalidMessage):
    def __init__(self, header: str, problem: str) -> None:
        super().__init__(f"invalid header {header!r}: {problem}")
        self.header = header


class NotJson(InvalidMessage):
    pass


class UnknownMessageType(InvalidMessage):
    def __init__(self, message_type: str) -> None:
        super().__init__(f"unknown message type {message_type!r}")
        self.message_type = message_type


class UnknownSchemaVersion(InvalidMessage):
    def __init__(self, message_type: str, version: int, problem: str) -> None:
        super().__init__(f"{message_type!r} schema version {version}: {problem}")
        self.message_type = message_type
        self.version = version


class PayloadValidationFailed(InvalidMessage):
    pass
