"""Every message model the shipped contracts define, as one registry."""

from __future__ import annotations

from contracts.messages import Message
from contracts.orders import CancelOrder, OrderCancelled, OrderConfirmed, OrderPlaced
from contracts.registry import MessageRegistry

ALL_MESSAGES: tuple[type[Message], ...] = (
    OrderPlaced,
    OrderConfirmed,
    CancelOrder,
    OrderCancelled,
)


def default_registry() -> MessageRegistry:
    """A fresh registry holding every shipped contract."""
    return MessageRegistry(ALL_MESSAGES)
