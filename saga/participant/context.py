"""What a handler is given besides its message: :class:`StepContext`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.resilience.retry import NonRetryableError


class NoDatabase(NonRetryableError):
    """``ctx.db`` used by a step whose service has no store: a defect, not retried."""


@dataclass(frozen=True)
class StepContext:
    """What a handler knows about the message it handles."""

    envelope: Envelope[Message]
    step: str
    attempt: int
    log: logging.LoggerAdapter[logging.Logger]
    span: Any
    _db: Any = None
    _connection_token: str | None = field(default=None, repr=False)

    @property
    def connection_token(self) -> str:
        """The user's access token for the step's connection (see :mod:`saga.security.vault`)."""
        if self._connection_token is None:
            raise NoDatabase(
                "no connection token: the step declares no connection"
                " (@service.step(..., connection=...)) or the message carried no handle"
            )
        return self._connection_token

    @property
    def db(self) -> Any:
        """The delivery's database connection, inside its transaction (``store="postgres"``).

        Its writes commit together with the inbox row and the outgoing events.
        """
        if self._db is None:
            raise NoDatabase(
                "this delivery has no database: use Service(..., store='postgres'), and in "
                "tests ServiceTestKit(service, database_url=...)"
            )
        return self._db

    @property
    def has_db(self) -> bool:
        return self._db is not None

    @property
    def saga_id(self) -> str:
        return self.envelope.saga_id

    @property
    def saga_type(self) -> str | None:
        return self.envelope.saga_type

    @property
    def message_id(self) -> str:
        return self.envelope.id

    @property
    def causation_id(self) -> str | None:
        """Id of the message that caused the one being handled."""
        return self.envelope.causation_id

    @property
    def idempotency_key(self) -> str:
        """Stable across redeliveries: pass it to downstream calls to make them idempotent."""
        return self.envelope.id
