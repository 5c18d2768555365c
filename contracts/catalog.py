"""What the coordinator loads (``SAGA_DEFINITIONS=contracts.catalog:saga_definitions``),
and every message type of the example, for tools that read any of them."""

from contracts.order_saga import ORDER_SAGA
from saga import Message, MessageRegistry, SagaDefinition, SagaFinished

#: Every message the example's saga and services exchange.
ALL_MESSAGES: tuple[type[Message], ...] = (*ORDER_SAGA.models(), SagaFinished)


def default_registry() -> MessageRegistry:
    """A fresh registry holding every message type of the example."""
    return MessageRegistry(ALL_MESSAGES)


def saga_definitions() -> tuple[SagaDefinition, ...]:
    """Every saga definition of the example, validated."""
    return (ORDER_SAGA.validate(),)
