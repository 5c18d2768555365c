"""The envelope every message travels in.

An :class:`Envelope` is the CloudEvents context (id, source, type, time) plus
the saga extensions (saga id, saga type, step, causation id, attempt, schema
version) around one payload. On Kafka it is a record whose key is the saga id,
so all messages of one saga stay on one partition, in order.

>>> from typing import ClassVar
>>> from saga import Event
>>> class OrderPlaced(Event):
...     message_type: ClassVar[str] = "orders.OrderPlaced"
...     order_id: str
>>> placed = Envelope(payload=OrderPlaced(order_id="o-1"), saga_id="o-1", source="/orders")
>>> placed.type, placed.schema_version, placed.attempt
('orders.OrderPlaced', 1, 1)
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from saga.messages.base import Message

P = TypeVar("P", bound=Message, covariant=True)
Q = TypeVar("Q", bound=Message)


def new_message_id() -> str:
    """A fresh, globally unique message id (``ce_id``)."""
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope(Generic[P]):
    """One message: CloudEvents context, saga extensions and a typed payload."""

    payload: P
    saga_id: str
    source: str
    id: str = field(default_factory=new_message_id)
    time: datetime = field(default_factory=_now)
    saga_type: str | None = None
    step: str | None = None
    causation_id: str | None = None
    attempt: int = 1
    subject: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None

    def __post_init__(self) -> None:
        if not self.saga_id:
            raise ValueError("saga_id must not be empty")
        if not self.source:
            raise ValueError("source must not be empty")
        if self.attempt < 1:
            raise ValueError("attempt starts at 1")
        if self.time.tzinfo is None:
            raise ValueError("time must be timezone-aware")

    @property
    def type(self) -> str:
        """CloudEvents ``type``: the payload's ``message_type``."""
        return self.payload.message_type

    @property
    def schema_version(self) -> int:
        return self.payload.schema_version

    def caused(self, payload: Q, *, source: str, step: str | None = None) -> Envelope[Q]:
        """A new message in the same saga and trace, caused by this one.

        >>> from typing import ClassVar
        >>> from saga import Event
        >>> class OrderPlaced(Event):
        ...     message_type: ClassVar[str] = "orders.OrderPlaced"
        >>> class StockReserved(Event):
        ...     message_type: ClassVar[str] = "inventory.StockReserved"
        >>> placed = Envelope(
        ...     payload=OrderPlaced(), saga_id="o-1", source="/orders", saga_type="order"
        ... )
        >>> confirmed = placed.caused(StockReserved(), source="/services/inventory")
        >>> confirmed.causation_id == placed.id, confirmed.saga_type
        (True, 'order')
        """
        return Envelope(
            payload=payload,
            saga_id=self.saga_id,
            source=source,
            saga_type=self.saga_type,
            step=step if step is not None else self.step,
            causation_id=self.id,
            subject=self.subject,
            traceparent=self.traceparent,
            tracestate=self.tracestate,
        )

    def replace(self, **changes: Any) -> Envelope[P]:
        """A copy with ``changes`` applied (e.g. ``attempt=2``)."""
        return dataclasses.replace(self, **changes)
