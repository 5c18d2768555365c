"""Payload base classes: every message body is a versioned pydantic model.

Commands are imperative (``ReserveInventory``), events are past tense
(``InventoryReserved``). Each concrete message declares its CloudEvents type
and the schema version of its current shape::

    class OrderPlaced(Event):
        message_type: ClassVar[str] = "orders.OrderPlaced"
        schema_version: ClassVar[int] = 2

        order_id: str
        amount_cents: int

        # Version 1 had ``amount`` in whole units.
        upcasters: ClassVar[Mapping[int, Upcaster]] = {
            1: lambda v1: {"order_id": v1["order_id"], "amount_cents": v1["amount"] * 100},
        }
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

MessageKind = Literal["command", "event"]

#: Turns the JSON object of version ``n`` into the JSON object of version ``n + 1``.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Message(BaseModel):
    """Base of every payload. Frozen, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: CloudEvents ``type`` of this message, e.g. ``"orders.OrderPlaced"``.
    message_type: ClassVar[str]
    #: Version of the current shape; bump it with an upcaster for the old one.
    schema_version: ClassVar[int] = 1
    #: ``{n: fn}``: ``fn`` lifts a version-``n`` payload to version ``n + 1``.
    upcasters: ClassVar[Mapping[int, Upcaster]] = {}
    kind: ClassVar[MessageKind]


class Command(Message):
    """A request to do something, named in the imperative (``ReleaseInventory``)."""

    kind: ClassVar[MessageKind] = "command"


class Event(Message):
    """A fact that happened, named in the past tense (``InventoryReleased``)."""

    kind: ClassVar[MessageKind] = "event"
